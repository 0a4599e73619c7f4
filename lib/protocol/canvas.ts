import { PyTuple, saferepr } from './saferepr';
import type { PeerCompat, TaskMessageSpec } from './task-message';

/**
 * Celery's canvas on the wire (wire spec §6, celery/canvas.py), pure: no I/O. A `Signature` is a
 * task call waiting to be made; `signatureToDict` / `signatureFromDict` convert it to and from
 * Celery's 6-key signature dict; `planChain` / `planGroup` / `planChord` freeze a workflow (give
 * every task its id) and build the messages that start it, exactly as Celery's producer does.
 */

/** The `subtask_type` of a signature dict: null for a plain task. */
export type SubtaskType = 'chain' | 'group' | 'chord' | 'xmap' | 'xstarmap' | 'chunks';
const SUBTASK_TYPES: readonly string[] = ['chain', 'group', 'chord', 'xmap', 'xstarmap', 'chunks'];

/** Celery's signature dict, as JSON carries it: exactly these 6 keys, in this order. */
export interface SignatureDict {
  task: string;
  args: unknown[];
  kwargs: Record<string, unknown>;
  options: Record<string, unknown>;
  subtask_type: string | null;
  immutable: boolean;
}

/** Options of a signature, as a TS caller gives them (Celery's `.set(...)` / apply_async options). */
export interface SignatureOptions {
  /** Task id; default one is given when the workflow is frozen. */
  taskId?: string;
  /** Queue the task is sent to (the worker that publishes it routes it there). */
  queue?: string;
  exchange?: string;
  routingKey?: string;
  /** Seconds after the task is published (for a chain step: after the previous step ends). */
  countdown?: number;
  /** Absolute time (sent as an ISO string, which Celery passes through). */
  eta?: Date | string;
  /** Seconds after the task is published, or an absolute time. */
  expires?: number | Date | string;
  priority?: number;
  ignoreResult?: boolean;
  timeLimit?: number;
  softTimeLimit?: number;
  shadow?: string;
}

/** Celery's option name of each TS option, in the order Celery would have them when given together. */
const OPTION_NAMES: Record<keyof SignatureOptions, string> = {
  taskId: 'task_id',
  queue: 'queue',
  exchange: 'exchange',
  routingKey: 'routing_key',
  countdown: 'countdown',
  eta: 'eta',
  expires: 'expires',
  priority: 'priority',
  ignoreResult: 'ignore_result',
  timeLimit: 'time_limit',
  softTimeLimit: 'soft_time_limit',
  shadow: 'shadow',
};

/** A signature dict or one of its options that cannot be read: says where and what. */
export class InvalidSignatureError extends TypeError {
  override name = 'InvalidSignatureError';
}

/**
 * A task call waiting to be made (Celery's `Signature`): task name, partial args, kwargs, options
 * under Celery's names (`task_id`, `queue`, `countdown`, `link`, `link_error`, `chord`, ...; nested
 * signatures kept as `Signature`), `subtask_type` for a chain / group / chord, and `immutable`.
 * `R` is the task's result type when known (typed signatures from the producer).
 */
export class Signature<R = unknown> {
  /** Type marker only: the result type of the task. */
  declare readonly __result?: R;

  constructor(
    readonly task: string,
    public args: unknown[] = [],
    public kwargs: Record<string, unknown> = {},
    public options: Record<string, unknown> = {},
    public subtaskType: string | null = null,
    public immutable = false,
  ) {
    if (typeof task !== 'string' || task === '') throw new InvalidSignatureError('signature: task is not a non-empty string');
    if (!Array.isArray(args)) throw new InvalidSignatureError(`signature ${task}: args is not an array`);
    if (!isPlainObject(kwargs)) throw new InvalidSignatureError(`signature ${task}: kwargs is not an object`);
  }

  /** Sets options (Celery's `.set()`); returns this signature. */
  set(options: SignatureOptions): this {
    for (const key of Object.keys(options) as (keyof SignatureOptions)[]) {
      const name = OPTION_NAMES[key];
      if (!name) throw new InvalidSignatureError(`signature ${this.task}: unknown option ${JSON.stringify(key)}`);
      let value: unknown = options[key];
      if (value === undefined) continue;
      if (value instanceof Date) value = value.toISOString().replace('Z', '000+00:00');
      this.options[name] = value;
    }
    return this;
  }

  /** Makes the signature immutable (Celery's `si()`): the previous step's result is not prepended to its args. */
  setImmutable(immutable = true): this {
    this.immutable = immutable;
    return this;
  }

  /** `setImmutable()`: Celery's `si`. */
  si(): this {
    return this.setImmutable(true);
  }

  /** Adds a callback applied with this task's result when it succeeds (Celery's `link`); returns this signature. */
  link(callback: Signature): this {
    this.listOption('link').push(callback);
    return this;
  }

  /** Adds an errback applied when this task fails (Celery's `link_error`); returns this signature. */
  linkError(errback: Signature): this {
    this.listOption('link_error').push(errback);
    return this;
  }

  private listOption(name: string): unknown[] {
    const current = this.options[name];
    if (Array.isArray(current)) return current;
    const list = current === undefined || current === null ? [] : [current];
    this.options[name] = list;
    return list;
  }

  /** A deep copy (options and nested signatures copied), as Celery's `clone()`. */
  clone(): Signature<R> {
    return new Signature<R>(this.task, [...this.args], { ...this.kwargs }, cloneValue(this.options) as Record<string, unknown>, this.subtaskType, this.immutable);
  }

  /** The task id, once frozen. */
  get id(): string | undefined {
    return typeof this.options.task_id === 'string' ? this.options.task_id : undefined;
  }

  /**
   * Celery's `Signature.freeze`: gives the signature its task id (kept when it has one) and the
   * workflow's ids, in Celery's order: task_id, root_id, parent_id, reply_to, group_id (kept when
   * set), chord, group_index. Returns the task id.
   */
  freeze(ctx: FreezeContext, at: FreezeArgs = {}): string {
    const opts = this.options;
    if (typeof opts.task_id !== 'string') opts.task_id = at.id ?? ctx.newId();
    if (at.rootId) opts.root_id = at.rootId;
    if (at.parentId) opts.parent_id = at.parentId;
    if (!('reply_to' in opts)) opts.reply_to = ctx.replyTo;
    if (at.groupId && !('group_id' in opts)) opts.group_id = at.groupId;
    if (at.chord) opts.chord = at.chord;
    if (at.groupIndex !== undefined && at.groupIndex !== null) opts.group_index = at.groupIndex;
    return opts.task_id as string;
  }

  /** Celery's signature dict (6 keys, in order). */
  toDict(): SignatureDict {
    return signatureToDict(this);
  }
}

/** Ids and the reply_to a freeze uses. */
export interface FreezeContext {
  newId(): string;
  /** The producer's `reply_to` (Celery's `app.thread_oid`). */
  replyTo: string;
  /** The peer generation: 5.2 leaves `group_id` off a chord body and `group_index` off plain group members. */
  peer?: PeerCompat;
}

export interface FreezeArgs {
  id?: string;
  rootId?: string;
  parentId?: string;
  groupId?: string;
  groupIndex?: number | null;
  chord?: Signature;
}

function cloneValue(value: unknown): unknown {
  if (value instanceof Signature) return value.clone();
  if (Array.isArray(value)) return value.map(cloneValue);
  if (isPlainObject(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, cloneValue(v)]));
  return value;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** A value with every nested `Signature` turned into its dict. */
function toWire(value: unknown): unknown {
  if (value instanceof Signature) return signatureToDict(value);
  if (Array.isArray(value)) return value.map(toWire);
  if (isPlainObject(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toWire(v)]));
  return value;
}

/** Celery's signature dict of a signature: `task, args, kwargs, options, subtask_type, immutable`. */
export function signatureToDict(sig: Signature): SignatureDict {
  return {
    task: sig.task,
    args: toWire(sig.args) as unknown[],
    kwargs: toWire(sig.kwargs) as Record<string, unknown>,
    options: toWire(sig.options) as Record<string, unknown>,
    subtask_type: sig.subtaskType,
    immutable: sig.immutable,
  };
}

/** Options whose values are signatures (parsed as such). */
const SIGNATURE_LIST_OPTIONS = ['link', 'link_error'];

/**
 * Reads a signature dict as Python sends it (embed.chain / callbacks / chord, chord_unlock's
 * body, kwargs of celery.chain / group / chord). Missing args / kwargs / options / subtask_type /
 * immutable take Celery's defaults; a wrong type is an InvalidSignatureError naming the key.
 * Nested signatures (options link / link_error / chord, kwargs tasks / header / body) are parsed too.
 */
export function signatureFromDict(value: unknown, where = 'signature'): Signature {
  if (!isPlainObject(value)) throw new InvalidSignatureError(`${where}: expected a signature dict, got ${describe(value)}`);
  const d = value;
  if (typeof d.task !== 'string' || d.task === '') throw new InvalidSignatureError(`${where}: "task" is not a non-empty string (${describe(d.task)})`);
  const name = `${where} ${d.task}`;
  const args = d.args ?? [];
  if (!Array.isArray(args)) throw new InvalidSignatureError(`${name}: "args" is not a list (${describe(args)})`);
  const kwargs = d.kwargs ?? {};
  if (!isPlainObject(kwargs)) throw new InvalidSignatureError(`${name}: "kwargs" is not a mapping (${describe(kwargs)})`);
  const options = d.options ?? {};
  if (!isPlainObject(options)) throw new InvalidSignatureError(`${name}: "options" is not a mapping (${describe(options)})`);
  const subtaskType = d.subtask_type ?? null;
  if (subtaskType !== null && (typeof subtaskType !== 'string' || !SUBTASK_TYPES.includes(subtaskType))) {
    throw new InvalidSignatureError(`${name}: "subtask_type" ${describe(subtaskType)} is not one of null, ${SUBTASK_TYPES.join(', ')}`);
  }
  const immutable = d.immutable ?? false;
  if (typeof immutable !== 'boolean') throw new InvalidSignatureError(`${name}: "immutable" is not a boolean (${describe(immutable)})`);
  const parsedOptions: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(options)) {
    if (SIGNATURE_LIST_OPTIONS.includes(key) && v !== null) {
      // Celery keeps a single signature or a list (maybe_list)
      parsedOptions[key] = Array.isArray(v) ? v.map((s, i) => signatureFromDict(s, `${name}: options.${key}[${i}]`)) : signatureFromDict(v, `${name}: options.${key}`);
    } else if (key === 'chord' && v !== null) {
      parsedOptions[key] = signatureFromDict(v, `${name}: options.chord`);
    } else if ((key === 'task_id' || key === 'group_id' || key === 'root_id' || key === 'parent_id' || key === 'queue') && v !== null && typeof v !== 'string') {
      throw new InvalidSignatureError(`${name}: options.${key} is not a string (${describe(v)})`);
    } else {
      parsedOptions[key] = v;
    }
  }
  const parsedKwargs = subtaskType ? parseCanvasKwargs(subtaskType, kwargs, name) : { ...kwargs };
  return new Signature(d.task, [...args], parsedKwargs, parsedOptions, subtaskType, immutable);
}

/** kwargs of celery.chain / celery.group (`tasks`) and celery.chord (`header`, `body`). */
function parseCanvasKwargs(type: string, kwargs: Record<string, unknown>, name: string): Record<string, unknown> {
  const out = { ...kwargs };
  if (type === 'chain' || type === 'group') {
    if (!Array.isArray(kwargs.tasks)) throw new InvalidSignatureError(`${name}: a ${type} needs kwargs.tasks as a list (${describe(kwargs.tasks)})`);
    out.tasks = kwargs.tasks.map((t, i) => signatureFromDict(t, `${name}: kwargs.tasks[${i}]`));
  } else if (type === 'chord') {
    const header = kwargs.header;
    if (Array.isArray(header)) out.header = header.map((t, i) => signatureFromDict(t, `${name}: kwargs.header[${i}]`));
    else out.header = signatureFromDict(header, `${name}: kwargs.header`);
    if (kwargs.body !== null && kwargs.body !== undefined) out.body = signatureFromDict(kwargs.body, `${name}: kwargs.body`);
  }
  return out;
}

/** A value as an error message quotes it: JSON, cut at 80 characters. */
export function describe(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/** A chain as a signature (`celery.chain`, kwargs.tasks): for nesting a chain in a group or chord. */
export function chainSignature(steps: Signature[]): Signature {
  return new Signature('celery.chain', [], { tasks: steps }, {}, 'chain');
}

/** A group's signature: its result is a list (a chain that ends with one resolves a GroupResult). */
export class GroupSignature extends Signature<unknown[]> {
  /** Type marker only. */
  declare readonly __group: true;
}

/**
 * A group as a signature (`celery.group`, kwargs.tasks), to put in a chain: followed by a task it
 * becomes a chord; as the last step after a task, each member gets that task's result.
 */
export function groupSignature(members: Signature[]): GroupSignature {
  return new GroupSignature('celery.group', [], { tasks: members }, {}, 'group');
}

/** A chord as a signature (`celery.chord`, kwargs header / body). */
export function chordSignature(header: Signature[], body: Signature): Signature {
  return new Signature('celery.chord', [], { kwargs: {}, header, body }, {}, 'chord');
}

// ---------------------------------------------------------------------------------------------
// Messages that start a workflow

/** One message to publish: what `encodeTaskMessage` takes, and how to route it. */
export interface CanvasMessage {
  spec: TaskMessageSpec;
  route: {
    /** Route as this task name (chord_unlock is routed as its body). */
    name: string;
    queue?: string;
    exchange?: string;
    routingKey?: string;
  };
}

export interface ChainPlan {
  /** The message of the first step (its `embed.chain` carries the rest), or more when it is a chord. */
  messages: CanvasMessage[];
  /** Every step's task id, in chain order; a chord step counts as its body. */
  ids: string[];
  /** The id the caller waits on: the last step's. */
  id: string;
  /** When the last step is a group: its members' ids, in order (`id` is then the group's). */
  groupMembers?: string[];
}

export interface GroupPlan {
  messages: CanvasMessage[];
  groupId: string;
  /** Each member's result id (a chain member's last step), in order. */
  ids: string[];
}

/**
 * How a chord completes: `unlock`, as Celery on Cassandra (a `celery.chord_unlock` task polls the
 * header results every `interval`); `counter` (NestJS workers only): no chord_unlock, each header
 * task records itself in a per-chord row and the last one publishes the body.
 */
export type ChordCompletion = 'unlock' | 'counter';

/**
 * The message header that puts a header task of a chord in counter mode: the chord's size (its
 * number of header tasks). A NestJS worker then records the task in the chord's row once its
 * result is stored, and the last one publishes the body; Python Celery ignores the header (it
 * becomes an attribute of `task.request`), so a Python worker running such a task never completes
 * the chord.
 */
export const CHORD_COUNTER_HEADER = 'nestjs_chord_size';

export interface ChordPlan {
  /** `celery.chord_unlock` first (not in counter mode), then the header tasks, as Celery publishes them. */
  messages: CanvasMessage[];
  groupId: string;
  headerIds: string[];
  /** The body's id: what the caller waits on. */
  id: string;
}

/** The message applying a frozen signature, as `Signature.apply_async` → `send_task` builds it. */
export function messageOf(sig: Signature, extra: { args?: unknown[]; chain?: Signature[] | null } = {}): CanvasMessage {
  const o = sig.options;
  if (sig.subtaskType) throw new InvalidSignatureError(`${sig.task}: a ${sig.subtaskType} is not sent as one task message`);
  const id = o.task_id;
  if (typeof id !== 'string') throw new InvalidSignatureError(`${sig.task}: not frozen (no options.task_id)`);
  const args = extra.args && !sig.immutable ? [...extra.args, ...sig.args] : sig.args;
  const list = (v: unknown) => (v === undefined || v === null ? null : (Array.isArray(v) ? v : [v]).map(toWire));
  const num = (v: unknown) => (typeof v === 'number' ? v : undefined);
  const spec: TaskMessageSpec = {
    task: sig.task,
    id,
    args: toWire(args) as unknown[],
    kwargs: toWire(sig.kwargs) as Record<string, unknown>,
    countdown: num(o.countdown),
    eta: typeof o.eta === 'string' ? o.eta : undefined,
    expires: typeof o.expires === 'number' || typeof o.expires === 'string' ? o.expires : undefined,
    priority: num(o.priority),
    shadow: typeof o.shadow === 'string' ? o.shadow : undefined,
    group: typeof o.group_id === 'string' ? o.group_id : null,
    groupIndex: num(o.group_index) ?? null,
    timeLimit: num(o.time_limit),
    softTimeLimit: num(o.soft_time_limit),
    rootId: typeof o.root_id === 'string' ? o.root_id : null,
    parentId: typeof o.parent_id === 'string' ? o.parent_id : null,
    ignoreResult: typeof o.ignore_result === 'boolean' ? o.ignore_result : undefined,
    replyTo: typeof o.reply_to === 'string' ? o.reply_to : undefined,
    argsrepr: saferepr(reprView(new PyTuple(args))),
    kwargsrepr: saferepr(reprView(sig.kwargs)),
    embed: {
      callbacks: list(o.link),
      errbacks: list(o.link_error),
      chain: extra.chain === undefined || extra.chain === null ? (Array.isArray(o.chain) ? (toWire(o.chain) as unknown[]) : null) : extra.chain.map(signatureToDict),
      chord: o.chord instanceof Signature ? signatureToDict(o.chord) : ((o.chord as unknown) ?? null),
    },
  };
  return { spec, route: routeOf(sig, sig.task) };
}

function routeOf(sig: Signature, name: string): CanvasMessage['route'] {
  const o = sig.options;
  const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
  return { name, queue: str(o.queue), exchange: str(o.exchange), routingKey: str(o.routing_key) };
}

/** How Python's saferepr shows a value: signatures as dicts whose args are tuples (Celery stores them so). */
function reprView(value: unknown): unknown {
  if (value instanceof PyTuple) return new PyTuple(value.items.map(reprView));
  if (value instanceof Signature) {
    const d = signatureToDict(value);
    return { ...d, args: new PyTuple(d.args.map(reprView)), options: reprView(d.options) };
  }
  if (Array.isArray(value)) return value.map(reprView);
  if (isPlainObject(value)) {
    if (typeof value.task === 'string' && 'subtask_type' in value && Array.isArray(value.args)) {
      return { ...value, args: new PyTuple(value.args.map(reprView)) };
    }
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, reprView(v)]));
  }
  return value;
}

function checkSteps(steps: Signature[], what: string): void {
  if (steps.length === 0) throw new InvalidSignatureError(`${what}: needs at least one signature`);
  steps.forEach((s, i) => {
    if (!(s instanceof Signature)) throw new InvalidSignatureError(`${what}: item ${i} is not a Signature (${describe(s)})`);
  });
}

/** Nested chains spliced in (Celery unrolls them). */
function flattenChain(steps: Signature[]): Signature[] {
  return steps.flatMap((s) => (s.subtaskType === 'chain' ? flattenChain(s.kwargs.tasks as Signature[]) : [s]));
}

/**
 * Celery's `chain.apply_async` (`_chain.run` / `prepare_steps`): the steps are cloned and frozen
 * last to first, so each has its `task_id`; the first step is published with `embed.chain` = the
 * remaining steps in reverse (the last element runs next). A group followed by a task becomes a
 * chord whose body is that task, as Celery upgrades it. `taskId` is the last step's id.
 */
export function planChain(input: Signature[], ctx: FreezeContext, opts: { taskId?: string; args?: unknown[] } = {}): ChainPlan {
  checkSteps(input, 'chain');
  const steps = flattenChain(input).map((s) => s.clone());
  // group | task -> chord(group, task); the chord takes the place of both
  const prepared: Signature[] = [];
  for (let i = 0; i < steps.length; i++) {
    const step = steps[i];
    if (step.subtaskType === 'group' && i + 1 < steps.length && steps[i + 1].subtaskType === null) {
      prepared.push(chordSignature(step.kwargs.tasks as Signature[], steps[i + 1]));
      i++;
    } else {
      prepared.push(step);
    }
  }
  if (prepared.length === 1 && prepared[0].subtaskType === 'group') {
    const group = planGroup(prepared[0].kwargs.tasks as Signature[], ctx, { groupId: prepared[0].id ?? opts.taskId });
    return { messages: group.messages, ids: [group.groupId], id: group.groupId, groupMembers: group.ids };
  }
  const last = prepared.length - 1;
  const ids: string[] = new Array(prepared.length);
  let groupMembers: string[] | undefined;
  for (let i = last; i >= 0; i--) {
    const step = prepared[i];
    if (step.subtaskType === 'chord') {
      // a chord step is frozen through its body; the header is frozen when it is published
      const body = step.kwargs.body as Signature;
      ids[i] = body.freeze(ctx, { id: i === last ? opts.taskId : undefined });
    } else if (step.subtaskType === 'group' && i === last && i > 0) {
      groupMembers = freezeGroupStep(step, ctx, opts.taskId);
      ids[i] = step.id as string;
    } else if (step.subtaskType) {
      throw new InvalidSignatureError(`chain: a ${step.subtaskType} at step ${i} is not supported here (a group must be followed by a task, or be the last step)`);
    } else {
      ids[i] = step.freeze(ctx, { id: i === last ? opts.taskId : undefined });
    }
  }
  const [first, ...rest] = prepared;
  const remaining = rest.reverse();
  if (first.subtaskType === 'chord') {
    // Celery's chord.run puts the rest of the chain in the body's options: chord_unlock publishes it with the body
    const body = first.kwargs.body as Signature;
    if (remaining.length) body.options.chain = remaining;
    const chord = planChord(first.kwargs.header as Signature[], body, ctx, { args: opts.args });
    return { messages: chord.messages, ids, id: ids[last], groupMembers };
  }
  return { messages: [messageOf(first, { args: opts.args, chain: remaining })], ids, id: ids[last], groupMembers };
}

/**
 * A group as a later chain step, frozen as Celery's `group.freeze` does: the group's `task_id`
 * (its group id), `root_id` / `parent_id` (null until the worker applies it), every member with
 * its own id and index. The worker that ends the step before applies the group with its result
 * prepended to each member. Returns the members' ids.
 */
function freezeGroupStep(step: Signature, ctx: FreezeContext, id: string | undefined): string[] {
  const o = step.options;
  if (typeof o.task_id !== 'string') o.task_id = id ?? ctx.newId();
  if (!('root_id' in o)) o.root_id = null;
  if (!('parent_id' in o)) o.parent_id = null;
  const members = flattenGroup(step.kwargs.tasks as Signature[]).map((m, index) => {
    if (m.subtaskType) throw new InvalidSignatureError(`chain: member ${index} of the last group is a ${m.subtaskType}; only tasks are supported there`);
    const sig = m.clone();
    sig.freeze(ctx, { groupIndex: ctx.peer === '5.2' ? null : index });
    return sig;
  });
  step.kwargs = { ...step.kwargs, tasks: members };
  return members.map((m) => m.id as string);
}

/**
 * Celery's `group.apply_async`: `group_id` = `groupId` or a new id; each member is frozen with
 * it and its index and published as its own task (header `group`, `group_index`; 5.2 peers get no
 * `group_index`, as Celery 5.2.6). A chain member starts as a chain whose last step carries the
 * group.
 */
export function planGroup(members: Signature[], ctx: FreezeContext, opts: { groupId?: string } = {}): GroupPlan {
  checkSteps(members, 'group');
  const groupId = opts.groupId ?? ctx.newId();
  const messages: CanvasMessage[] = [];
  const ids: string[] = [];
  flattenGroup(members).forEach((member, index) => {
    const groupIndex = ctx.peer === '5.2' ? null : index;
    if (member.subtaskType === 'chain') {
      const steps = flattenChain(member.kwargs.tasks as Signature[]).map((s) => s.clone());
      const lastStep = steps[steps.length - 1];
      lastStep.freeze(ctx, { groupId, groupIndex });
      const plan = planChain(steps, ctx);
      messages.push(...plan.messages);
      ids.push(plan.id);
      return;
    }
    if (member.subtaskType) throw new InvalidSignatureError(`group: member ${index} is a ${member.subtaskType}; only tasks and chains are supported in a group`);
    const sig = member.clone();
    ids.push(sig.freeze(ctx, { groupId, groupIndex }));
    messages.push(messageOf(sig));
  });
  return { messages, groupId, ids };
}

/** Nested groups are flattened into their parent (Celery unrolls them). */
function flattenGroup(members: Signature[]): Signature[] {
  return members.flatMap((m) => (m.subtaskType === 'group' ? flattenGroup(m.kwargs.tasks as Signature[]) : [m]));
}

/**
 * Celery's `chord.run` with a backend without native chords (Cassandra, wire spec §4.6 / §6.4):
 * the body is frozen (its `task_id`, and `group_id` = the header's group except for 5.2 peers),
 * the header members are frozen with the group, their index and `chord` = the body; then
 * `celery.chord_unlock` is published first — args `[group_id, body]`, kwargs `{interval,
 * max_retries, result: [header result tuples]}`, countdown 1, routed as the body (its queue), no
 * priority unless the body has one, `ignore_result` — and the header tasks after it, each with
 * `embed.chord` = the body. An empty header sends the body at once with `[]`. With `completion:
 * 'counter'` only the header tasks are sent, each with the {@link CHORD_COUNTER_HEADER} header.
 */
export function planChord(
  header: Signature[],
  bodyInput: Signature,
  ctx: FreezeContext,
  opts: { taskId?: string; groupId?: string; args?: unknown[]; interval?: number | null; maxRetries?: number | null; completion?: ChordCompletion } = {},
): ChordPlan {
  if (!(bodyInput instanceof Signature)) throw new InvalidSignatureError(`chord: the body is not a Signature (${describe(bodyInput)})`);
  if (bodyInput.subtaskType && bodyInput.subtaskType !== 'chain') throw new InvalidSignatureError(`chord: the body is a ${bodyInput.subtaskType}; only a task or a chain is supported as a chord body`);
  const groupId = opts.groupId ?? ctx.newId();
  let body: Signature;
  let id: string;
  if (bodyInput.subtaskType === 'chain') {
    // a chain body (Celery 5.2 upgrades `chain(a, group, b, c)` to a chord whose body is chain(b, c)):
    // every step frozen, the last one is the body's result
    const steps = flattenChain(bodyInput.kwargs.tasks as Signature[]).map((s) => s.clone());
    checkSteps(steps, 'chord body chain');
    steps.forEach((s, i) => s.freeze(ctx, i === steps.length - 1 ? { id: opts.taskId, groupId: ctx.peer === '5.2' ? undefined : groupId } : {}));
    body = new Signature(bodyInput.task, [...bodyInput.args], { ...bodyInput.kwargs, tasks: steps }, cloneValue(bodyInput.options) as Record<string, unknown>, 'chain', bodyInput.immutable);
    id = steps[steps.length - 1].id as string;
  } else {
    body = bodyInput.clone();
    id = body.freeze(ctx, { id: opts.taskId, groupId: ctx.peer === '5.2' ? undefined : groupId });
  }
  if (header.length === 0) {
    return { messages: [messageOf(body, { args: [[]] })], groupId, headerIds: [], id };
  }
  checkSteps(header, 'chord header');
  const members = flattenGroup(header).map((m, i) => {
    if (m.subtaskType) throw new InvalidSignatureError(`chord header: member ${i} is a ${m.subtaskType}; only tasks are supported in a chord header`);
    const sig = m.clone();
    sig.freeze(ctx, { groupId, chord: body, groupIndex: i });
    return sig;
  });
  const headerIds = members.map((m) => m.id as string);
  if (opts.completion === 'counter') {
    // no chord_unlock: each header message says the chord's size; its worker counts it done (lib/worker/chord-counter.ts)
    const messages = members.map((m) => {
      const message = messageOf(m, { args: opts.args });
      message.spec.headers = { ...message.spec.headers, [CHORD_COUNTER_HEADER]: members.length };
      return message;
    });
    return { messages, groupId, headerIds, id };
  }
  const unlockKwargs = { interval: opts.interval ?? null, max_retries: opts.maxRetries ?? null, result: headerIds.map((h) => [[h, null], null]) };
  const unlockArgs = [groupId, body];
  const unlock: CanvasMessage = {
    spec: {
      task: 'celery.chord_unlock',
      id: ctx.newId(),
      args: toWire(unlockArgs) as unknown[],
      kwargs: unlockKwargs,
      countdown: 1,
      priority: typeof body.options.priority === 'number' ? body.options.priority : null,
      ignoreResult: true,
      replyTo: ctx.replyTo,
      argsrepr: saferepr(reprView(new PyTuple(unlockArgs))),
      kwargsrepr: saferepr(reprView({ ...unlockKwargs, result: unlockKwargs.result.map((t) => new PyTuple([new PyTuple(t[0] as unknown[]), null])) })),
    },
    route: routeOf(body, body.task),
  };
  return { messages: [unlock, ...members.map((m) => messageOf(m, { args: opts.args }))], groupId, headerIds, id };
}
