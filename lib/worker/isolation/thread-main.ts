/**
 * The code of an isolated thread: loads the task's module, runs one task at a time and posts its
 * value or error back. Started by IsolatedPool (never imported by the main thread). No Nest here:
 * a class is constructed with no arguments.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';
import { SoftTimeLimitExceeded } from './errors';
import { setIsolatedTaskContext } from './thread-context';
import { fromTransferable, toTransferable, toTransferredError } from './transfer';
import { ABORT_INDEX, ABORT_NONE, ABORT_SOFT, IsolatedTaskSpec, STARTED_AT_INDEX, STARTED_ID_INDEX, ThreadData, ToMain, ToThread } from './protocol';

const data = workerData as ThreadData;
const flag = new Int32Array(data.shared);
const startedAt = new BigInt64Array(data.shared);
const port = parentPort;
if (!port) throw new Error('thread-main runs only as a worker thread started by IsolatedPool');

const modules = new Map<string, Promise<Record<string, unknown>>>();
const instances = new Map<string, object>();

/** The module's exports: `require()` for CommonJS, `import()` for ES modules. */
function load(file: string): Promise<Record<string, unknown>> {
  let loaded = modules.get(file);
  if (!loaded) {
    loaded = (async () => {
      if (!file.endsWith('.mjs')) {
        try {
          return require(file) as Record<string, unknown>;
        } catch (err) {
          if ((err as { code?: string }).code !== 'ERR_REQUIRE_ESM') throw err;
        }
      }
      // `import()` written so TypeScript's CommonJS output keeps it (not turned into require)
      const esmImport = new Function('url', 'return import(url)') as (url: string) => Promise<Record<string, unknown>>;
      return esmImport(pathToFileURL(file).href);
    })();
    modules.set(file, loaded);
    loaded.catch(() => modules.delete(file)); // a failed load is retried by the next run
  }
  return loaded;
}

async function target(spec: IsolatedTaskSpec): Promise<(...args: unknown[]) => unknown> {
  const exports = await load(spec.module);
  const exported = exports[spec.exportName];
  if (typeof exported !== 'function') {
    const names = Object.keys(exports).filter((k) => k !== '__esModule');
    throw new TypeError(
      `Isolated task: ${spec.module} has no exported ${spec.method ? 'class' : 'function'} "${spec.exportName}" (its exports: ${names.join(', ') || 'none'})`,
    );
  }
  if (!spec.method) return exported as (...args: unknown[]) => unknown;
  const key = `${spec.module}\u0000${spec.exportName}`;
  let instance = instances.get(key);
  if (!instance) {
    try {
      instance = new (exported as new () => object)();
    } catch (err) {
      throw new TypeError(
        `Isolated task: constructing ${spec.exportName} with no arguments failed (an isolated task's class gets no dependency injection): ${(err as Error)?.message ?? String(err)}`,
        { cause: err },
      );
    }
    instances.set(key, instance);
  }
  const method = (instance as Record<string, unknown>)[spec.method];
  if (typeof method !== 'function') throw new TypeError(`Isolated task: ${spec.exportName}.${spec.method} is not a method (in ${spec.module})`);
  return (method as (...args: unknown[]) => unknown).bind(instance);
}

const nativeAborted = Object.getOwnPropertyDescriptor(AbortSignal.prototype, 'aborted')!.get!;
const nativeReason = Object.getOwnPropertyDescriptor(AbortSignal.prototype, 'reason')!.get!;

/**
 * A signal whose `aborted`, `reason` and `throwIfAborted()` first look at the flag the main thread
 * sets, so a loop that never awaits still sees the soft limit or an abort.
 */
function sharedSignal(controller: AbortController): AbortSignal {
  const signal = controller.signal;
  const poll = () => {
    const kind = Atomics.load(flag, ABORT_INDEX);
    if (kind !== ABORT_NONE && !nativeAborted.call(signal)) controller.abort(reasonFor(kind));
  };
  Object.defineProperties(signal, {
    aborted: { get: () => (poll(), nativeAborted.call(signal) as boolean), configurable: true },
    reason: { get: () => (poll(), nativeReason.call(signal) as unknown), configurable: true },
    throwIfAborted: {
      value: () => {
        poll();
        if (nativeAborted.call(signal)) throw nativeReason.call(signal);
      },
      configurable: true,
    },
  });
  return signal;
}

function reasonFor(kind: number): Error {
  return kind === ABORT_SOFT ? new SoftTimeLimitExceeded() : new DOMException('The task was aborted', 'AbortError');
}

let current: { id: number; controller: AbortController } | null = null;

async function run(message: Extract<ToThread, { type: 'run' }>): Promise<void> {
  const controller = new AbortController();
  const signal = sharedSignal(controller);
  current = { id: message.id, controller };
  setIsolatedTaskContext({ signal, request: Object.freeze(message.context ?? {}) });
  let reply: ToMain;
  try {
    const fn = await target(message.spec);
    // the time limits count from here (not the thread's start, nor the module's loading)
    Atomics.store(startedAt, STARTED_AT_INDEX, BigInt(Date.now()));
    Atomics.store(flag, STARTED_ID_INDEX, message.id);
    const value = await fn(...(fromTransferable(message.args) as unknown[]));
    reply = { type: 'done', id: message.id, ok: true, value: toTransferable(value) };
  } catch (err) {
    const reason: unknown = nativeAborted.call(signal) ? nativeReason.call(signal) : undefined;
    const byAbort = reason !== undefined && (err === reason || (err as { cause?: unknown })?.cause === reason);
    reply = { type: 'done', id: message.id, ok: false, error: toTransferredError(err), abortedBy: byAbort ? Atomics.load(flag, ABORT_INDEX) : ABORT_NONE };
  } finally {
    current = null;
    setIsolatedTaskContext(undefined);
  }
  port!.postMessage(reply);
}

port.on('message', (message: ToThread) => {
  if (message.type === 'run') void run(message);
  else if (message.type === 'abort') {
    if (current?.id === message.id && !current.controller.signal.aborted) current.controller.abort(reasonFor(message.kind));
  } else if (message.type === 'preload') {
    for (const file of message.modules) load(file).catch(() => undefined); // errors surface on the run that needs it
  }
});
port.postMessage({ type: 'ready' } satisfies ToMain);
