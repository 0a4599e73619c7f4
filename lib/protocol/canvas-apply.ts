import type { TaskMessageSpec } from './task-message';
import { CanvasMessage, CHORD_COUNTER_HEADER, describe, FreezeContext, InvalidSignatureError, planChain, planChord, Signature, signatureFromDict } from './canvas';
import { saferepr, tupleRepr } from './saferepr';
import { ExceptionInfo, isExceptionInfo } from './exceptions';
import { parseResultTuple, ResultTuple } from './result-tuple';
import type { TaskMeta } from './result-row';
import { READY_STATES } from './states';

/**
 * What a worker publishes for the canvas a task message carries (wire spec §6), pure: the
 * signature dicts Python puts in `embed.chain` / `callbacks` / `errbacks` (and a chord's body),
 * read and checked, turned into the task messages Celery's worker would send — the next chain
 * step (`trace.py::_dispatch_callbacks_and_chain`), the link callbacks (several → a group), the
 * errbacks (`Backend._call_task_errbacks`, the by-id form) — and the result tuples the task's
 * row lists as its `children`.
 */

/** A signature dict that cannot be applied: the producer side's error (canvas.ts), one class for both. */
export { InvalidSignatureError };

/** A Celery signature dict (`celery/canvas.py::Signature`), its 6 keys read and checked. */
export interface CelerySignature {
  task: string;
  args: unknown[];
  kwargs: Record<string, unknown>;
  options: Record<string, unknown>;
  /** null for a plain task; `group`, `chain`, `chord`, ... for canvas primitives. */
  subtaskType: string | null;
  immutable: boolean;
}

/** One task message to publish: what `encodeTaskMessage` takes, and where the signature routes it. */
export interface PublishStep {
  spec: TaskMessageSpec;
  /** `name`: route as this task name instead of the message's (a chord's `celery.chord_unlock` is routed as its body). */
  route: { queue?: string; exchange?: string; routingKey?: string; priority?: number; name?: string };
}

/** Messages to publish, in order, and the result tuples they add to the task's `children`. */
export interface AppliedCanvas {
  publish: PublishStep[];
  children: unknown[];
}

/** The running task, as the parent of what it publishes. */
export interface CanvasParent {
  id: string;
  rootId: string;
}

function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Reads a signature dict as Python sends it (`Signature.from_dict`): `task` a non-empty string;
 * `args` a list, `kwargs` and `options` mappings, `immutable` a boolean, `subtask_type` null or a
 * string — each may be missing (Celery's defaults). Throws InvalidSignatureError naming `where`.
 */
export function parseSignature(value: unknown, where: string): CelerySignature {
  if (!isMapping(value)) throw new InvalidSignatureError(`${where}: not a signature dict (${describe(value)})`);
  const { task, args = [], kwargs = {}, options = {}, subtask_type: subtaskType = null, immutable = false } = value;
  if (typeof task !== 'string' || task === '') throw new InvalidSignatureError(`${where}: "task" is not a non-empty string (${describe(task)})`);
  const named = `${where} (${task})`;
  if (!Array.isArray(args)) throw new InvalidSignatureError(`${named}: "args" is not a list (${describe(args)})`);
  if (!isMapping(kwargs)) throw new InvalidSignatureError(`${named}: "kwargs" is not a mapping (${describe(kwargs)})`);
  if (!isMapping(options)) throw new InvalidSignatureError(`${named}: "options" is not a mapping (${describe(options)})`);
  if (subtaskType !== null && typeof subtaskType !== 'string') throw new InvalidSignatureError(`${named}: "subtask_type" is neither null nor a string (${describe(subtaskType)})`);
  if (typeof immutable !== 'boolean') throw new InvalidSignatureError(`${named}: "immutable" is not a boolean (${describe(immutable)})`);
  return { task, args, kwargs, options, subtaskType, immutable };
}

/** What the applier adds to a signature's own options (Celery's `apply_async(args, **options)` inside the worker). */
interface Applied {
  prepend: readonly unknown[];
  parentId: string;
  rootId: string;
  chain?: unknown[] | null;
  groupId?: string;
  groupIndex?: number;
}

function optional<T>(options: Record<string, unknown>, key: string, type: 'string' | 'number' | 'boolean', where: string): T | undefined {
  const v = options[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== type) throw new InvalidSignatureError(`${where}: option ${key} is not a ${type} (${describe(v)})`);
  return v as T;
}

/** Celery's `maybe_list` for `link` / `link_error`: one signature or a list of them. */
function signatureList(value: unknown): unknown[] | null {
  if (value === undefined || value === null) return null;
  return Array.isArray(value) ? value : [value];
}

/** A plain signature as one task message: its options as apply_async reads them, the partial args prepended unless immutable. */
function plainStep(sig: CelerySignature, applied: Applied, newId: () => string, where: string): PublishStep {
  const o = sig.options;
  const id = optional<string>(o, 'task_id', 'string', where) ?? newId();
  const args = sig.immutable ? sig.args : [...applied.prepend, ...sig.args];
  const eta = o.eta;
  if (eta !== undefined && eta !== null && typeof eta !== 'string') throw new InvalidSignatureError(`${where}: option eta is not an ISO date string (${describe(eta)})`);
  const expires = o.expires;
  if (expires !== undefined && expires !== null && typeof expires !== 'string' && typeof expires !== 'number') {
    throw new InvalidSignatureError(`${where}: option expires is neither seconds nor an ISO date string (${describe(expires)})`);
  }
  const stampedHeaders = Array.isArray(o.stamped_headers) ? o.stamped_headers.filter((n): n is string => typeof n === 'string') : null;
  const stamps: Record<string, unknown> = {};
  for (const name of stampedHeaders ?? []) if (name in o) stamps[name] = o[name];
  const priority = optional<number>(o, 'priority', 'number', where);
  return {
    spec: {
      task: sig.task,
      id,
      args,
      kwargs: sig.kwargs,
      argsrepr: tupleRepr(args),
      kwargsrepr: saferepr(sig.kwargs),
      countdown: optional<number>(o, 'countdown', 'number', where),
      eta: eta as string | undefined,
      expires: expires as string | number | undefined,
      priority,
      shadow: optional<string>(o, 'shadow', 'string', where) ?? null,
      group: applied.groupId ?? optional<string>(o, 'group_id', 'string', where) ?? null,
      groupIndex: applied.groupIndex ?? optional<number>(o, 'group_index', 'number', where) ?? null,
      timeLimit: optional<number>(o, 'time_limit', 'number', where) ?? null,
      softTimeLimit: optional<number>(o, 'soft_time_limit', 'number', where) ?? null,
      rootId: applied.rootId,
      parentId: applied.parentId,
      ignoreResult: optional<boolean>(o, 'ignore_result', 'boolean', where) ?? false,
      replyTo: optional<string>(o, 'reply_to', 'string', where),
      stampedHeaders,
      stamps,
      // a signature's own `chain` option (a chord body's: the rest of the enclosing chain) goes out as its embedded chain, as apply_async sends it
      embed: { callbacks: signatureList(o.link), errbacks: signatureList(o.link_error), chain: applied.chain ?? (Array.isArray(o.chain) ? o.chain : null), chord: o.chord ?? null },
    },
    route: {
      queue: optional<string>(o, 'queue', 'string', where),
      exchange: optional<string>(o, 'exchange', 'string', where),
      routingKey: optional<string>(o, 'routing_key', 'string', where),
      priority,
    },
  };
}

/** A task's result tuple (`AsyncResult.as_tuple()`), as the parent's `children` lists it. */
export function taskTuple(id: string): unknown {
  return [[id, null], null];
}

/** The members of a `group` signature (`kwargs.tasks`). */
function groupMembers(sig: CelerySignature, where: string): unknown[] {
  const tasks = sig.kwargs.tasks;
  if (!Array.isArray(tasks)) throw new InvalidSignatureError(`${where}: a group signature without a "tasks" list in its kwargs (${describe(tasks)})`);
  return tasks;
}

/**
 * A group applied (`group.apply_async`): every member published with the group's id (its
 * `options.task_id`, else a new one) and its index; the child tuple is the GroupResult's.
 */
function applyGroup(members: readonly unknown[], groupId: string, applied: Applied, newId: () => string, where: string): AppliedCanvas {
  const publish = members.map((member, i) => {
    const label = `${where} member ${i}`;
    const sig = parseSignature(member, label);
    if (sig.subtaskType === 'chain') return applyNested(member, { ...applied, groupId, groupIndex: i }, newId, label);
    if (sig.subtaskType !== null) throw new InvalidSignatureError(`${label} (${sig.task}): a ${sig.subtaskType} inside a group is not supported by the NestJS worker (tasks and chains are)`);
    const step = plainStep(sig, { ...applied, groupId, groupIndex: i }, newId, label);
    return { publish: [step], children: [taskTuple(step.spec.id)] };
  });
  return { publish: publish.flatMap((p) => p.publish), children: [[[groupId, null], publish.flatMap((p) => p.children)]] };
}

/** One signature applied: a plain task, a group, a chain or a chord (xmap / xstarmap / chunks are refused by name). */
function applyOne(value: unknown, applied: Applied, newId: () => string, where: string): AppliedCanvas {
  const sig = parseSignature(value, where);
  if (sig.subtaskType === null) {
    const step = plainStep(sig, applied, newId, where);
    return { publish: [step], children: [taskTuple(step.spec.id)] };
  }
  if (sig.subtaskType === 'group') {
    if (applied.chain && applied.chain.length > 0) throw new InvalidSignatureError(`${where} (${sig.task}): a group followed by more chain steps (Celery sends a group followed by a task as a chord)`);
    const groupId = optional<string>(sig.options, 'task_id', 'string', where) ?? newId();
    return applyGroup(groupMembers(sig, where), groupId, applied, newId, where);
  }
  return applyNested(value, applied, newId, where);
}

/** A result tuple with its parents (`AsyncResult.as_tuple()`: `((id, parent), None)`), innermost parent first in `chainIds`. */
function chainTuple(chainIds: readonly string[]): unknown {
  return chainIds.reduce<unknown>((parent, id) => [[id, parent], null], null);
}

/**
 * A chain or a chord applied inside the worker (a chain step, a callback, a chord's body, a group
 * member), as Celery's `chain.apply_async` / `chord.apply_async` there: the producer's planners
 * (canvas.ts) freeze it and build its messages; the applier's result is prepended to the first
 * step (a chain) or to every header task (a chord) unless the signature is immutable; everything
 * carries the applier as parent and its root; a chord's body takes the rest of the enclosing
 * chain (`chord.run`: `body.options.update(options)`). `children` is the result tuple Celery
 * lists: a chain's last step with its steps as parents, a chord's body with its header's group.
 */
function applyNested(value: unknown, applied: Applied, newId: () => string, where: string): AppliedCanvas {
  const sig = signatureFromDict(value, where);
  const ctx: FreezeContext = { newId, replyTo: newId() };
  const prepend = sig.immutable ? [] : [...applied.prepend, ...sig.args];
  const ids = { root_id: applied.rootId, parent_id: applied.parentId };
  const member = applied.groupId !== undefined ? { groupId: applied.groupId, groupIndex: applied.groupIndex ?? null } : null;
  if (sig.subtaskType === 'chain') {
    if (applied.chain && applied.chain.length > 0) throw new InvalidSignatureError(`${where} (${sig.task}): a chain as a chain step is not supported by the NestJS worker (Celery flattens nested chains when it sends them)`);
    const steps = (sig.kwargs.tasks as Signature[]).map((s) => s.clone());
    if (steps.length === 0) throw new InvalidSignatureError(`${where} (${sig.task}): an empty chain`);
    for (const step of steps) withIds(step, { root_id: applied.rootId });
    withIds(steps[0], ids);
    // a chain in a group: its last step is the group's member (Celery's group.freeze of a chain)
    if (member) steps[steps.length - 1].freeze(ctx, member);
    const plan = planChain(steps, ctx, { args: prepend });
    return { publish: plan.messages.map(publishStep), children: [chainTuple(plan.ids)] };
  }
  if (sig.subtaskType === 'chord') {
    if (member) throw new InvalidSignatureError(`${where} (${sig.task}): a chord inside a group is not supported by the NestJS worker`);
    const header = sig.kwargs.header instanceof Signature ? sig.kwargs.header : null;
    const members = (header ? header.kwargs.tasks : sig.kwargs.header) as Signature[] | undefined;
    if (!Array.isArray(members)) throw new InvalidSignatureError(`${where} (${sig.task}): a chord without a header list`);
    const body = sig.kwargs.body;
    if (!(body instanceof Signature)) throw new InvalidSignatureError(`${where} (${sig.task}): a chord without a body`);
    const { task_id: chordId, ...chordOptions } = sig.options;
    const bodyCopy = body.clone();
    Object.assign(bodyCopy.options, chordOptions, ids, applied.chain && applied.chain.length > 0 ? { chain: applied.chain } : {});
    const headerIds = members.map((m) => withIds(m.clone(), ids));
    const plan = planChord(headerIds, bodyCopy, ctx, {
      taskId: typeof body.options.task_id === 'string' ? body.options.task_id : typeof chordId === 'string' ? chordId : undefined,
      groupId: typeof header?.options.task_id === 'string' ? header.options.task_id : undefined,
      args: prepend,
    });
    // chord_unlock is sent by the applying task (Celery's fallback_chord_unlock runs in it)
    const [unlock, ...rest] = plan.messages;
    const unlockStep = unlock.spec.task === 'celery.chord_unlock' ? [{ ...unlock, spec: { ...unlock.spec, rootId: applied.rootId, parentId: applied.parentId } }] : [unlock];
    const group = [[plan.groupId, null], plan.headerIds.map((id) => taskTuple(id))];
    return { publish: [...unlockStep, ...rest].map(publishStep), children: [[[plan.id, group], null]] };
  }
  throw new InvalidSignatureError(`${where} (${sig.task}): a ${sig.subtaskType} signature here is not supported by the NestJS worker (tasks, groups, chains and chords are)`);
}

function withIds(sig: Signature, ids: Record<string, string>): Signature {
  Object.assign(sig.options, ids);
  return sig;
}

/** A producer-side message as a worker publish step (its routing options; chord_unlock routed as its body). */
function publishStep({ spec, route }: CanvasMessage): PublishStep {
  const priority = typeof spec.priority === 'number' ? spec.priority : undefined;
  return { spec, route: { queue: route.queue, exchange: route.exchange, routingKey: route.routingKey, priority, ...(route.name !== spec.task ? { name: route.name } : {}) } };
}

/**
 * What a task that returned `retval` publishes (Celery's `_dispatch_callbacks_and_chain`): its
 * link callbacks with `(retval,)` prepended — one alone, several as a group (group signatures
 * among them each as their own group) — then the next chain step, `chain[-1]`, with
 * `(retval,)` prepended and `chain[:-1]` as its own chain. Everything carries the task as
 * parent and its root. `children` is what the task's SUCCESS row lists, in publish order.
 */
export function successCanvas(embed: { callbacks: unknown[] | null; chain: unknown[] | null }, retval: unknown, parent: CanvasParent, newId: () => string): AppliedCanvas {
  const out: AppliedCanvas = { publish: [], children: [] };
  const add = (applied: AppliedCanvas) => {
    out.publish.push(...applied.publish);
    out.children.push(...applied.children);
  };
  const base: Applied = { prepend: [retval], parentId: parent.id, rootId: parent.rootId };
  const callbacks = embed.callbacks ?? [];
  if (callbacks.length === 1) add(applyOne(callbacks[0], base, newId, 'callback 0'));
  else if (callbacks.length > 1) {
    const plain: unknown[] = [];
    callbacks.forEach((cb, i) => {
      const sig = parseSignature(cb, `callback ${i}`);
      if (sig.subtaskType === 'group') add(applyOne(cb, base, newId, `callback ${i}`));
      else plain.push(cb);
    });
    if (plain.length > 0) add(applyGroup(plain, newId(), base, newId, 'callbacks'));
  }
  const chain = embed.chain ?? [];
  if (chain.length > 0) {
    const where = `chain step ${chain.length - 1}`;
    const next = parseSignature(chain[chain.length - 1], where);
    if (next.subtaskType === 'group' && chain.length === 1) {
      // a group ending a chain (`chain(a, group(b, c))`): its members, under the group's frozen id
      add(applyOne(chain[0], base, newId, where));
    } else {
      add(applyOne(chain[chain.length - 1], { ...base, chain: chain.slice(0, -1) }, newId, where));
    }
  }
  return out;
}

/**
 * The ids that get the failing task's FAILURE too (Celery's `Backend._fail_chain`): every
 * remaining chain element with an `options.task_id`, in the chain's list order, and the body of
 * a chord element. Elements that are not signature dicts are skipped, as Celery skips those
 * without an id.
 */
export function remainingChainIds(chain: readonly unknown[] | null): string[] {
  const ids: string[] = [];
  const queue = [...(chain ?? [])];
  while (queue.length > 0) {
    const elem = queue.shift();
    if (!isMapping(elem)) continue;
    const options = isMapping(elem.options) ? elem.options : {};
    if (typeof options.task_id === 'string' && options.task_id) ids.push(options.task_id);
    if (elem.subtask_type === 'chord' && isMapping(elem.kwargs) && elem.kwargs.body !== undefined && elem.kwargs.body !== null) queue.push(elem.kwargs.body);
  }
  return ids;
}

/**
 * The errbacks of a failed task, as Celery sends them to another process
 * (`Backend._call_task_errbacks`, the by-id form): all of them as one group, each with the failed
 * task's id prepended, the failed task as parent and its root.
 */
export function errbackCanvas(errbacks: readonly unknown[] | null, failed: CanvasParent, newId: () => string): AppliedCanvas {
  if (!errbacks || errbacks.length === 0) return { publish: [], children: [] };
  return applyGroup(errbacks, newId(), { prepend: [failed.id], parentId: failed.id, rootId: failed.rootId }, newId, 'errbacks');
}

/** Celery's `result_chord_retry_interval`: how often `celery.chord_unlock` looks again, seconds. */
export const CHORD_RETRY_INTERVAL = 1;

/** The call of `celery.chord_unlock` (`app/builtins.py`), read and checked. */
export interface ChordUnlockCall {
  groupId: string;
  body: CelerySignature;
  /** The body as it came, for applying it. */
  bodyValue: unknown;
  /** Seconds between looks (default 1). */
  interval: number;
  /** null: look for ever (Celery's default). */
  maxRetries: number | null;
  /** The header results, in header order (`result_from_tuple` of each). */
  header: ResultTuple[];
}

/**
 * Reads `celery.chord_unlock(group_id, callback, interval=None, max_retries=None, result=None)`
 * as bound from the message (wire spec §4.6). Throws InvalidSignatureError naming what is wrong.
 */
export function parseChordUnlock(groupId: unknown, callback: unknown, interval: unknown, maxRetries: unknown, result: unknown): ChordUnlockCall {
  if (typeof groupId !== 'string' || !groupId) throw new InvalidSignatureError(`celery.chord_unlock: group_id is not a non-empty string (${describe(groupId)})`);
  const body = parseSignature(callback, `celery.chord_unlock ${groupId}: the body`);
  if (interval !== null && interval !== undefined && (typeof interval !== 'number' || !(interval >= 0))) {
    throw new InvalidSignatureError(`celery.chord_unlock ${groupId}: interval is not a number of seconds >= 0 (${describe(interval)})`);
  }
  if (maxRetries !== null && maxRetries !== undefined && (typeof maxRetries !== 'number' || !Number.isInteger(maxRetries) || maxRetries < 0)) {
    throw new InvalidSignatureError(`celery.chord_unlock ${groupId}: max_retries is not null or a whole number >= 0 (${describe(maxRetries)})`);
  }
  if (!Array.isArray(result)) throw new InvalidSignatureError(`celery.chord_unlock ${groupId}: result is not a list of header result tuples (${describe(result)})`);
  let header: ResultTuple[];
  try {
    header = result.map((r, i) => parseResultTuple(r, `celery.chord_unlock ${groupId}: header result ${i}`));
  } catch (err) {
    throw new InvalidSignatureError((err as Error).message);
  }
  return { groupId, body, bodyValue: callback, interval: (interval as number | null | undefined) ?? CHORD_RETRY_INTERVAL, maxRetries: (maxRetries as number | null | undefined) ?? null, header };
}

/** Every task id the header's results name (members of nested groups included), each once. */
export function chordHeaderIds(header: readonly ResultTuple[]): string[] {
  const ids = new Set<string>();
  const walk = (t: ResultTuple) => (t.results ? t.results.forEach(walk) : ids.add(t.id));
  header.forEach(walk);
  return [...ids];
}

/** What a chord's header results say: not all ready yet; all succeeded (values in header order); or a header task failed. */
export type ChordState =
  | { kind: 'waiting'; pending: number }
  | { kind: 'ready'; values: unknown[] }
  | { kind: 'failed'; culpritId: string; error: ExceptionInfo };

/**
 * Celery's `GroupResult.ready()` then `join(propagate=True)`: waiting while any header task is
 * not in a ready state; then the first failed one in header order fails the chord; else the
 * values in header order (a nested group's as a list).
 */
export function chordState(header: readonly ResultTuple[], metas: ReadonlyMap<string, Pick<TaskMeta, 'status' | 'result'>>): ChordState {
  const ids = chordHeaderIds(header);
  const pending = ids.filter((id) => !READY_STATES.has(metas.get(id)?.status ?? 'PENDING')).length;
  if (pending > 0) return { kind: 'waiting', pending };
  let failed: { culpritId: string; error: ExceptionInfo } | null = null;
  const valueOf = (t: ResultTuple): unknown => {
    if (t.results) return t.results.map(valueOf);
    const meta = metas.get(t.id) as Pick<TaskMeta, 'status' | 'result'>;
    if (meta.status !== 'SUCCESS' && !failed) failed = { culpritId: t.id, error: exceptionOf(meta.result) };
    return meta.result;
  };
  const values = header.map(valueOf);
  if (failed) return { kind: 'failed', ...(failed as { culpritId: string; error: ExceptionInfo }) };
  return { kind: 'ready', values };
}

function exceptionOf(result: unknown): ExceptionInfo {
  if (isExceptionInfo(result)) return result;
  return { exc_type: 'Exception', exc_message: [saferepr(result)], exc_module: 'builtins' };
}

/** Python's repr of the exception a join raised: `ValueError('boom')`. */
function exceptionRepr(e: ExceptionInfo): string {
  return `${e.exc_type.split('.').pop()}(${(Array.isArray(e.exc_message) ? e.exc_message : [e.exc_message]).map((a) => saferepr(a)).join(', ')})`;
}

/**
 * The `ChordError` Celery's `chord_unlock` stores on the body's id when a header task failed: the
 * repr of the exception the join raised (`ChordError("ValueError('boom')")`). Celery names the
 * culprit (`Dependency <id> raised ...`) only for a failed member in its backend's cache, and its
 * cache holds SUCCESS metas only: on Cassandra (5.2.6 and 5.7 alike) the text is the repr alone.
 */
export function chordErrorOf(error: ExceptionInfo): ExceptionInfo {
  return { exc_type: 'ChordError', exc_message: [exceptionRepr(error)], exc_module: 'celery.exceptions' };
}

/**
 * The chord's body applied by `chord_unlock` (`callback.delay(values)`): `[values]` prepended, the
 * unlock task as parent. A group body is published as its group.
 */
export function chordBodyCanvas(call: ChordUnlockCall, values: unknown[], parent: CanvasParent, newId: () => string): AppliedCanvas {
  return applyOne(call.bodyValue, { prepend: [values], parentId: parent.id, rootId: parent.rootId }, newId, `celery.chord_unlock ${call.groupId}: the body`);
}

/** The body's frozen id (where a ChordError is stored), its chain and its errbacks (`link_error`). */
export function chordBodyFailureTargets(call: ChordUnlockCall): { bodyId: string | null; chain: unknown[] | null; errbacks: unknown[] | null } {
  const o = call.body.options;
  const steps = call.body.kwargs.tasks;
  if (call.body.subtaskType === 'chain' && Array.isArray(steps) && steps.length > 0) {
    // a chain body (Celery 5.2 sends `chain(a, group, b, c)` as a chord whose body is chain(b, c)):
    // the ChordError goes on its last step (what the caller waits on) and every other step
    const last = parseSignature(steps[steps.length - 1], `celery.chord_unlock ${call.groupId}: the body's last step`);
    return {
      bodyId: typeof last.options.task_id === 'string' && last.options.task_id ? last.options.task_id : null,
      chain: steps.slice(0, -1).reverse(),
      errbacks: signatureList(last.options.link_error),
    };
  }
  return {
    bodyId: typeof o.task_id === 'string' && o.task_id ? o.task_id : null,
    chain: Array.isArray(o.chain) ? o.chain : null,
    errbacks: signatureList(o.link_error),
  };
}

/** A header task of a counter-mode chord (its message has the `nestjs_chord_size` header): its place in the chord. */
export interface CounterChordPart {
  groupId: string;
  /** Its `group_index`: where its value goes in the body's list. */
  index: number;
  /** How many header tasks the chord has. */
  size: number;
  /** The body signature (`embed.chord`). */
  body: unknown;
}

/**
 * Reads the chord part of a header task in counter mode from its message (headers `group`,
 * `group_index`, `nestjs_chord_size`, and `embed.chord`); null when the message is not one.
 * Throws InvalidSignatureError naming what is missing or wrong.
 */
export function counterChordPartOf(task: { id: string; headers: Record<string, unknown>; group: string | null; groupIndex: number | null; embed: { chord: unknown } }): CounterChordPart | null {
  const size = task.headers[CHORD_COUNTER_HEADER];
  if (size === undefined || size === null) return null;
  const where = `task ${task.id}, a header task of a counter-mode chord`;
  if (typeof size !== 'number' || !Number.isInteger(size) || size < 1) throw new InvalidSignatureError(`${where}: header ${CHORD_COUNTER_HEADER} is not a whole number >= 1 (${describe(size)})`);
  if (typeof task.group !== 'string' || !task.group) throw new InvalidSignatureError(`${where}: it has no group header (the chord's group id)`);
  const index = task.groupIndex;
  if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= size) {
    throw new InvalidSignatureError(`${where}: group_index ${describe(index)} is not a whole number from 0 to ${size - 1}`);
  }
  parseSignature(task.embed.chord, `${where}: embed.chord (the body)`);
  return { groupId: task.group, index, size, body: task.embed.chord };
}

/** A counter-mode chord as the call `celery.chord_unlock` would have got: its body and its header ids in header order. */
export function counterChordCall(part: CounterChordPart, headerIds: readonly string[]): ChordUnlockCall {
  return parseChordUnlock(part.groupId, part.body, null, null, headerIds.map(taskTuple));
}
