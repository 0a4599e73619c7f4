import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** `sw_ident` of our events: Python workers send `py-celery`; monitors show it as the worker's software. */
export const SOFTWARE_IDENT = 'nestjs-celery';

/** This library's version (`sw_ver`), from its package.json (found upwards from here: lib/ or dist/lib/). */
export const SOFTWARE_VERSION = packageVersion();

function packageVersion(): string {
  let dir = __dirname;
  for (let i = 0; i < 6; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === SOFTWARE_IDENT && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // not here: look further up
    }
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return 'unknown';
}
