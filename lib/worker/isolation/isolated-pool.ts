import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { extname, isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ResourceLimits, Worker } from 'node:worker_threads';
import { IsolatedPoolClosedError, SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError } from './errors';
import {
  ABORT_INDEX,
  ABORT_NONE,
  ABORT_REQUESTED,
  ABORT_SOFT,
  IsolatedTaskSpec,
  SHARED_BYTES,
  STARTED_AT_INDEX,
  STARTED_ID_INDEX,
  ThreadData,
  ToMain,
  ToThread,
} from './protocol';
import { fromTransferable, fromTransferredError, toTransferable } from './transfer';

export interface IsolatedPoolOptions {
  /** Most threads alive at once, hence most isolated tasks running at once. Default `os.availableParallelism()`. */
  size?: number;
  /**
   * How much longer than its hard limit a run may take to start its thread and load its module
   * before it is stopped as TimeLimitExceeded too (a module whose loading never ends). Default 30 s.
   */
  moduleLoadGraceMs?: number;
  /** V8 heap limits of each thread (`worker_threads` resourceLimits): a thread that exceeds them dies (WorkerLostError). */
  resourceLimits?: ResourceLimits;
}

export interface IsolatedRunOptions {
  /**
   * Hard time limit in ms, counted from the call of the task in its thread (not the wait for a
   * thread, nor its start and the loading of the module: those get 30 s more): the thread is
   * terminated (the work really stops) and the run rejects with TimeLimitExceeded(hardMs / 1000).
   */
  hardMs?: number | null;
  /** Soft time limit in ms: the task's signal aborts with SoftTimeLimitExceeded; the task decides. */
  softMs?: number | null;
  /** Aborting it is `abort(signal.reason)` (revoke, shutdown). */
  signal?: AbortSignal;
  /** Request fields the task can read in the thread (`isolatedTaskContext().request`); must be cloneable. */
  context?: Record<string, unknown>;
}

/** One run of an isolated task. */
export interface IsolatedRun {
  /** The task's value, or its error (rebuilt with name, message, stack and Python class fields). */
  readonly result: Promise<unknown>;
  /**
   * Asks the task to stop: a queued run rejects with `reason` at once; a running one sees its
   * signal abort, and if it ends by throwing that abort (or an AbortError caused by it) the run
   * rejects with `reason` itself. A task that ignores the signal keeps running.
   */
  abort(reason?: unknown): void;
  /** Stops the run now: a running task's thread is terminated; rejects with `error`. */
  terminate(error?: unknown): void;
}

export interface IsolatedPoolStats {
  /** Threads alive (idle or busy). */
  threads: number;
  busy: number;
  /** Runs waiting for a thread. */
  queued: number;
  /** Threads terminated for a hard limit or `terminate()` since the pool was made. */
  terminated: number;
}

interface Slot {
  worker: Worker;
  /** Views of the memory shared with the thread (see SHARED_BYTES). */
  flag: Int32Array;
  startedAt: BigInt64Array;
  run: PendingRun | null;
  /** Terminated on purpose: its exit is not a WorkerLostError. */
  killed: boolean;
  lastError: Error | null;
}

interface PendingRun {
  id: number;
  spec: IsolatedTaskSpec;
  args: unknown;
  opts: IsolatedRunOptions;
  slot: Slot | null;
  dispatchedAt: number;
  timers: NodeJS.Timeout[];
  abortReason: unknown;
  settled: boolean;
  resolve(value: unknown): void;
  reject(error: unknown): void;
  onSignal: (() => void) | null;
}

/**
 * Code each thread starts with (evaluated, so the pool works from compiled JS and from its .ts
 * sources alike). When the runner is a .ts file — this library run from source, as its own tests
 * do — and nothing registered a .ts loader, it compiles .ts modules with the `typescript` package.
 */
const BOOTSTRAP = `
const { workerData } = require('node:worker_threads');
if (workerData.runner.endsWith('.ts') && !require.extensions['.ts']) {
  const ts = require(require.resolve('typescript', { paths: [workerData.runner] }));
  const { readFileSync } = require('node:fs');
  const compilerOptions = {
    module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true,
    experimentalDecorators: true, emitDecoratorMetadata: true, inlineSourceMap: true,
  };
  require.extensions['.ts'] = (module, filename) => {
    const { outputText } = ts.transpileModule(readFileSync(filename, 'utf8'), { fileName: filename, compilerOptions });
    module._compile(outputText, filename);
  };
}
require(workerData.runner);
`;

/** How often a limit's timer looks again while the task's thread is still starting. */
const LOAD_POLL_MS = 20;

/** The runner beside this file, in this file's own language (.js when compiled, .ts under ts-jest). */
const RUNNER = join(__dirname, `thread-main${extname(__filename)}`);

/**
 * A pool of worker threads for CPU-bound tasks, where a hard time limit really stops the work
 * (a JavaScript function cannot be interrupted in place; a thread can be terminated). Threads start
 * lazily, up to `size`; a run waits for a free thread (FIFO); a terminated thread is replaced at
 * once by a fresh one that preloads the task modules already seen. Each thread runs one task at a
 * time. No Nest inside: see IsolatedTaskSpec for how a thread finds the code.
 */
export class IsolatedPool {
  readonly size: number;
  private readonly slots: Slot[] = [];
  private readonly queue: PendingRun[] = [];
  /** Modules checked to exist. */
  private readonly modules = new Set<string>();
  /** Modules a thread has loaded and called a task of: what a replacement thread preloads. */
  private readonly loaded = new Set<string>();
  private nextId = 1;
  private terminated = 0;
  private closed = false;

  constructor(private readonly options: IsolatedPoolOptions = {}) {
    const size = options.size ?? availableParallelism();
    if (!Number.isInteger(size) || size < 1) throw new TypeError(`IsolatedPool size must be a whole number of at least 1, got ${String(size)}`);
    this.size = size;
  }

  /** Runs `spec` with `args` on a thread; shorthand for `start(...).result`. */
  run(spec: IsolatedTaskSpec, args: unknown[], opts: IsolatedRunOptions = {}): Promise<unknown> {
    return this.start(spec, args, opts).result;
  }

  start(spec: IsolatedTaskSpec, args: unknown[], opts: IsolatedRunOptions = {}): IsolatedRun {
    let resolve!: (value: unknown) => void;
    let reject!: (error: unknown) => void;
    const result = new Promise<unknown>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const run: PendingRun = {
      id: this.nextId++,
      spec,
      args: undefined,
      opts,
      slot: null,
      dispatchedAt: 0,
      timers: [],
      abortReason: undefined,
      settled: false,
      resolve,
      reject,
      onSignal: null,
    };
    const handle: IsolatedRun = {
      result,
      abort: (reason?: unknown) => this.abort(run, reason ?? new DOMException('The task was aborted', 'AbortError')),
      terminate: (error?: unknown) => this.kill(run, error ?? new DOMException('The task was terminated', 'AbortError')),
    };
    try {
      if (this.closed) throw new IsolatedPoolClosedError();
      run.spec = { ...spec, module: this.checkModule(spec.module) };
      run.args = toTransferable(args);
      checkLimit('hardMs', opts.hardMs);
      checkLimit('softMs', opts.softMs);
    } catch (err) {
      this.settle(run, false, err);
      return handle;
    }
    if (opts.signal) {
      if (opts.signal.aborted) {
        this.settle(run, false, opts.signal.reason);
        return handle;
      }
      const signal = opts.signal;
      run.onSignal = () => handle.abort(signal.reason);
      signal.addEventListener('abort', run.onSignal, { once: true });
    }
    this.queue.push(run);
    this.pump();
    return handle;
  }

  stats(): IsolatedPoolStats {
    return { threads: this.slots.length, busy: this.slots.filter((s) => s.run).length, queued: this.queue.length, terminated: this.terminated };
  }

  /** Terminates every thread; queued and running runs reject with IsolatedPoolClosedError. */
  async close(): Promise<void> {
    this.closed = true;
    for (const run of this.queue.splice(0)) this.settle(run, false, new IsolatedPoolClosedError());
    const slots = this.slots.splice(0);
    for (const slot of slots) {
      slot.killed = true;
      if (slot.run) this.settle(slot.run, false, new IsolatedPoolClosedError());
    }
    await Promise.all(slots.map((slot) => slot.worker.terminate()));
  }

  /** An absolute path that exists (a `file://` URL is turned into its path); checked once per module. */
  private checkModule(module: string): string {
    const file = module.startsWith('file:') ? fileURLToPath(module) : module;
    if (this.modules.has(file)) return file;
    if (!isAbsolute(file)) throw new TypeError(`Isolated task module must be an absolute path (__filename) or a file:// URL (import.meta.url), got ${JSON.stringify(module)}`);
    if (!existsSync(file)) throw new TypeError(`Isolated task module ${file} does not exist (give the compiled file that exports the task)`);
    this.modules.add(file);
    return file;
  }

  /** Starts queued runs on idle threads, spawning threads up to `size`. */
  private pump(): void {
    while (this.queue.length > 0 && !this.closed) {
      const slot = this.slots.find((s) => !s.run) ?? (this.slots.length < this.size ? this.spawn() : null);
      if (!slot) return;
      this.dispatch(this.queue.shift()!, slot);
    }
  }

  private spawn(): Slot {
    const data: ThreadData & { runner: string } = { shared: new SharedArrayBuffer(SHARED_BYTES), runner: RUNNER };
    const worker = new Worker(BOOTSTRAP, { eval: true, workerData: data, resourceLimits: this.options.resourceLimits });
    const slot: Slot = { worker, flag: new Int32Array(data.shared), startedAt: new BigInt64Array(data.shared), run: null, killed: false, lastError: null };
    worker.on('message', (message: ToMain) => this.onMessage(slot, message));
    worker.on('error', (err: Error) => (slot.lastError = err));
    worker.on('exit', (code) => this.onExit(slot, code));
    worker.unref(); // an idle pool does not keep the process alive
    if (this.loaded.size > 0) this.post(slot, { type: 'preload', modules: [...this.loaded] });
    this.slots.push(slot);
    return slot;
  }

  private dispatch(run: PendingRun, slot: Slot): void {
    slot.run = run;
    run.slot = slot;
    run.dispatchedAt = Date.now();
    Atomics.store(slot.flag, ABORT_INDEX, ABORT_NONE);
    try {
      this.post(slot, { type: 'run', id: run.id, spec: run.spec, args: run.args, context: run.opts.context });
    } catch (err) {
      // a context that cannot be cloned (a function in it): this run fails, the thread stays free
      slot.run = null;
      run.slot = null;
      this.settle(run, false, err);
      return;
    }
    slot.worker.ref();
    const { softMs, hardMs } = run.opts;
    if (softMs != null) this.armLimit(run, softMs, () => this.signalThread(run, ABORT_SOFT));
    if (hardMs != null) this.armLimit(run, hardMs, () => this.kill(run, new TimeLimitExceeded(hardMs / 1000)), this.options.moduleLoadGraceMs ?? 30_000);
    if (run.abortReason !== undefined) this.signalThread(run, ABORT_REQUESTED);
  }

  /**
   * Calls `fire` `ms` after the task was called in its thread, as Celery's limits count from the
   * child starting the job: starting a thread and loading the task's module (hundreds of ms for a
   * Nest app's imports) are not the task's time. The thread writes when it called the task into
   * shared memory; the timer looks there when it fires and waits on if the call came later. A run
   * still loading its module after `ms + loadGraceMs` fires too (a module that never finishes loading).
   */
  private armLimit(run: PendingRun, ms: number, fire: () => void, loadGraceMs = Infinity): void {
    const check = () => {
      const slot = run.slot;
      if (run.settled || !slot) return;
      const now = Date.now();
      const started = Atomics.load(slot.flag, STARTED_ID_INDEX) === run.id ? Number(Atomics.load(slot.startedAt, STARTED_AT_INDEX)) : null;
      const left = started === null ? Math.min(LOAD_POLL_MS, run.dispatchedAt + ms + loadGraceMs - now) : started + ms - now;
      if (left > 0) run.timers.push(setTimeout(check, left));
      else fire();
    };
    run.timers.push(setTimeout(check, ms));
  }

  private post(slot: Slot, message: ToThread): void {
    slot.worker.postMessage(message);
  }

  private abort(run: PendingRun, reason: unknown): void {
    if (run.settled || run.abortReason !== undefined) return;
    run.abortReason = reason;
    if (!run.slot) {
      this.unqueue(run);
      this.settle(run, false, reason);
      return;
    }
    this.signalThread(run, ABORT_REQUESTED);
  }

  /** Sets the shared flag (seen at once by `signal.aborted` in the thread) and posts the abort (seen by listeners). */
  private signalThread(run: PendingRun, kind: number): void {
    const slot = run.slot;
    if (run.settled || !slot || Atomics.load(slot.flag, ABORT_INDEX) !== ABORT_NONE) return;
    Atomics.store(slot.flag, ABORT_INDEX, kind);
    this.post(slot, { type: 'abort', id: run.id, kind });
  }

  /** Ends a run now; a running one's thread is terminated and replaced. */
  private kill(run: PendingRun, error: unknown): void {
    if (run.settled) return;
    const slot = run.slot;
    if (!slot) {
      this.unqueue(run);
      this.settle(run, false, error);
      return;
    }
    this.noteLoaded(run, slot);
    slot.killed = true;
    this.removeSlot(slot);
    this.terminated++;
    this.settle(run, false, error);
    void slot.worker.terminate();
    if (!this.closed) {
      // the next task finds a warm thread instead of paying thread start and module loading
      if (this.slots.length < this.size && this.queue.length === 0) this.spawn();
      this.pump();
    }
  }

  private onMessage(slot: Slot, message: ToMain): void {
    if (message.type === 'ready') return;
    const run = slot.run;
    if (!run || run.id !== message.id) return;
    this.noteLoaded(run, slot);
    slot.run = null;
    slot.worker.unref();
    if (message.ok) {
      let value: unknown;
      try {
        value = fromTransferable(message.value);
      } catch (err) {
        this.settle(run, false, err);
        this.pump();
        return;
      }
      this.settle(run, true, value);
    } else {
      this.settle(run, false, this.errorOf(run, message.error, message.abortedBy));
    }
    this.pump();
  }

  /** A run whose task was called proves its module loads: later replacement threads preload it. */
  private noteLoaded(run: PendingRun, slot: Slot): void {
    if (Atomics.load(slot.flag, STARTED_ID_INDEX) === run.id) this.loaded.add(run.spec.module);
  }

  private errorOf(run: PendingRun, error: Extract<ToMain, { ok: false }>['error'], abortedBy: number): unknown {
    if (abortedBy === ABORT_SOFT) {
      const soft = new SoftTimeLimitExceeded();
      if (error.stack) soft.stack = error.stack;
      return soft;
    }
    if (abortedBy === ABORT_REQUESTED && run.abortReason !== undefined) return run.abortReason;
    return fromTransferredError(error);
  }

  private onExit(slot: Slot, code: number): void {
    const known = this.removeSlot(slot);
    if (slot.killed || !known) return;
    const run = slot.run;
    if (run) {
      const why = slot.lastError ? `${slot.lastError.name}: ${slot.lastError.message}` : `the thread exited with code ${code}`;
      this.settle(run, false, new WorkerLostError(`${why} (task ${run.spec.exportName}${run.spec.method ? `.${run.spec.method}` : ''})`));
    }
    this.pump();
  }

  private removeSlot(slot: Slot): boolean {
    const index = this.slots.indexOf(slot);
    if (index < 0) return false;
    this.slots.splice(index, 1);
    return true;
  }

  private unqueue(run: PendingRun): void {
    const index = this.queue.indexOf(run);
    if (index >= 0) this.queue.splice(index, 1);
  }

  private settle(run: PendingRun, ok: boolean, outcome: unknown): void {
    if (run.settled) return;
    run.settled = true;
    for (const timer of run.timers) clearTimeout(timer);
    if (run.onSignal) run.opts.signal?.removeEventListener('abort', run.onSignal);
    if (run.slot?.run === run) run.slot.run = null;
    if (ok) run.resolve(outcome);
    else run.reject(outcome);
  }
}

function checkLimit(name: string, value: number | null | undefined): void {
  if (value != null && !(Number.isFinite(value) && value >= 0)) throw new TypeError(`IsolatedPool: ${name} must be a number of milliseconds >= 0, got ${String(value)}`);
}
