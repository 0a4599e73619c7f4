import { fileURLToPath } from 'node:url';
import type { IsolatedTaskSpec } from './protocol';

/**
 * Why a thread could not reach `exported` through `spec`, or null when it can or this process
 * cannot tell. For the explorer to check `@Task({ isolate: 'thread', module })` at bootstrap rather
 * than on the first message. The module is `require()`d here: for a CommonJS module that declares
 * the task it is already loaded, so this runs nothing new. An ES module cannot be required (Node
 * 20): null, and the thread reports a missing export on the first run.
 */
export function checkIsolatedSpec(spec: IsolatedTaskSpec, exported: Function): string | null {
  const file = spec.module.startsWith('file:') ? fileURLToPath(spec.module) : spec.module;
  if (file.endsWith('.mjs')) return null;
  let exports: Record<string, unknown>;
  try {
    exports = require(file) as Record<string, unknown>;
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_REQUIRE_ESM') return null;
    return `cannot load ${file}: ${(err as Error)?.message ?? String(err)}`;
  }
  const value = exports[spec.exportName];
  if (value === exported) return null;
  if (value === undefined) {
    return `${file} does not export "${spec.exportName}": the thread loads that module and needs the task's class (or function) exported under this name`;
  }
  return `${file} exports a different "${spec.exportName}" than the one that declares the task`;
}
