/**
 * Celery's routing and topology, as data: which exchanges, queues and bindings a worker declares
 * for a configuration (kombu `Queue.declare`, Celery's `AMQP.Queues`), where a task message is
 * published (Celery's `Router.route`, `Celery.send_task` and `AMQP.send_task_message`), and the
 * native delayed-delivery topology of Celery 5.5+ (kombu's `native_delayed_delivery`). Pure: no
 * I/O and no clock; the broker turns the steps into AMQP frames.
 *
 * Checked against Celery 5.7 / kombu 5.7 by test/unit/protocol/routing.spec.ts with frames and
 * publishes captured from the real code (test/fixtures/celery-routing-5.7.json,
 * test/interop/python/capture_routing.py).
 */

export type ExchangeType = 'direct' | 'topic' | 'fanout' | 'headers';
export type QueueType = 'classic' | 'quorum';

export const EXCHANGE_TYPES: readonly ExchangeType[] = ['direct', 'topic', 'fanout', 'headers'];

export interface ExchangeDeclaration {
  name: string;
  type: ExchangeType;
  durable: boolean;
  autoDelete: boolean;
}

/** A queue as Celery declares it: its exchange, the binding key, and its arguments in declaration order. */
export interface QueueDeclaration {
  name: string;
  exchange: ExchangeDeclaration;
  /** The binding key (kombu's `Queue.routing_key`); also the routing key a publish to this queue's exchange uses. */
  routingKey: string;
  durable: boolean;
  autoDelete: boolean;
  /** `x-` arguments in the order they are sent (RabbitMQ compares them by value, not order). */
  arguments: Record<string, unknown>;
}

/** One AMQP declaration frame. */
export type TopologyStep =
  | { kind: 'exchange.declare'; exchange: string; type: ExchangeType; durable: boolean; autoDelete: boolean }
  | { kind: 'queue.declare'; queue: string; durable: boolean; exclusive: boolean; autoDelete: boolean; arguments: Record<string, unknown> }
  | { kind: 'queue.bind'; queue: string; exchange: string; routingKey: string }
  | { kind: 'exchange.bind'; destination: string; source: string; routingKey: string };

/** One entry of `taskQueues` (Celery's `task_queues` as a dict: kombu `Queue.from_dict`). */
export interface QueueDefinition {
  /** Default: the default exchange (`defaultExchange`, of type `defaultExchangeType`). */
  exchange?: string;
  /** Default `direct` when `exchange` is named (kombu's Exchange default). */
  exchangeType?: ExchangeType;
  /** Binding key; default the queue's name. */
  routingKey?: string;
  /** Queue arguments (`queue_arguments`), e.g. `{ 'x-queue-type': 'quorum' }`. */
  arguments?: Record<string, unknown>;
}

/** Where a route sends a task: a queue name, or Celery's route dict. */
export type RouteTarget =
  | string
  | { queue?: string; exchange?: string; exchangeType?: ExchangeType; routingKey?: string; priority?: number };

/** A router function (Celery's function routers): `null`/`undefined` lets the next router decide. */
export type RouteFunction = (name: string, args: readonly unknown[], kwargs: Readonly<Record<string, unknown>>, options: Readonly<RouteOptions>) => RouteTarget | null | undefined;

/** `taskRoutes` as given: a map of task name or glob → target, an ordered list of `[name | glob | RegExp, target]`, a function, or a list of those. */
export type TaskRoutesInput = Record<string, RouteTarget> | [string | RegExp, RouteTarget][] | RouteFunction | (Record<string, RouteTarget> | [string | RegExp, RouteTarget][] | RouteFunction)[];

/** Routing options of one call (Celery's `queue`, `exchange`, `exchange_type`, `routing_key`, `priority`). */
export interface RouteOptions {
  queue?: string;
  exchange?: string;
  exchangeType?: ExchangeType;
  routingKey?: string;
  priority?: number;
}

/** A router after normalization: a map router (exact names, then globs/regexps in order) or a function. */
export type Router = { exact: Map<string, RouteTarget>; patterns: [RegExp, RouteTarget][] } | RouteFunction;

export interface RoutingSettings {
  /** `task_default_queue`. */
  defaultQueue: string;
  /** `task_default_exchange` (Celery: the default queue's name). */
  defaultExchange: string;
  /** `task_default_exchange_type`, default `direct`. */
  defaultExchangeType: ExchangeType;
  /** `task_default_routing_key` (Celery: the default queue's name). */
  defaultRoutingKey: string;
  /** `task_default_queue_type`: applies to the default queue, and only when `queues` is empty (as Celery). */
  queueType: QueueType;
  /** `task_create_missing_queue_type`: type of queues that are not in `queues` (worker queues, `queue` options). */
  createMissingQueueType: QueueType;
  /** `task_queues`; empty: only the default queue. */
  queues: [string, QueueDefinition][];
  /** `task_queue_max_priority`: `x-max-priority` added to every queue that has none. */
  queueMaxPriority: number | null;
  /** This library's `queueArguments`: arguments every queue is declared with, before its own. */
  queueArguments: Record<string, unknown> | null;
  /** `task_routes`, normalized. */
  routers: Router[];
  /** `broker_native_delayed_delivery_queue_type`, default `quorum`. */
  delayedDeliveryQueueType: QueueType;
  /** Queues consumed besides `queues` (a worker's `-Q`): Celery adds them to its table, which matters for quorum detection and delayed bindings. */
  extraQueues: string[];
}

/** Where one task message goes. */
export interface Destination {
  exchange: string;
  routingKey: string;
  /** The queue the producer declares before publishing (Celery's `declare=[queue]`), or none. */
  declare: QueueDeclaration | null;
  /** The queue the route chose, also when the message goes through delayed delivery (then `declare` is null). */
  queue: QueueDeclaration | null;
  /** The message priority a route or the original delivery set, if any. */
  priority?: number;
  /** Routed through the native delayed-delivery topology (`celery_delayed_27`). */
  delayed: boolean;
}

/** Headers RabbitMQ adds when it dead-letters, stripped from a retried message (Celery 5.6.3+ `X_DEATH_HEADERS`). */
export const X_DEATH_HEADERS: readonly string[] = [
  'x-death',
  'x-first-death-exchange',
  'x-first-death-queue',
  'x-first-death-reason',
  'x-last-death-exchange',
  'x-last-death-queue',
  'x-last-death-reason',
];

/** The native delayed-delivery levels: 28 binary digits of whole seconds (kombu `MAX_NUMBER_OF_BITS_TO_USE`). */
export const DELAY_BITS = 28;
export const DELAYED_DELIVERY_EXCHANGE = 'celery_delayed_delivery';
/** Where a delayed message is published. */
export const DELAYED_ENTRY_EXCHANGE = `celery_delayed_${DELAY_BITS - 1}`;
const DELAY_PREFIX = new RegExp(`^(?:[01]\\.){${DELAY_BITS}}`);

/**
 * kombu 5.7's `calculate_routing_key`: the delay in whole seconds as 28 binary digits joined by
 * dots, then the routing key, after stripping one delay prefix a retried message's key may carry.
 */
export function calculateDelayedRoutingKey(countdownSeconds: number, routingKey: string): string {
  if (!Number.isInteger(countdownSeconds) || countdownSeconds < 1) throw new RangeError(`countdown must be a positive whole number of seconds, got ${countdownSeconds}`);
  if (!routingKey) throw new RangeError('routing key must be non-empty');
  const digits = countdownSeconds.toString(2).padStart(DELAY_BITS, '0').split('').join('.');
  return `${digits}.${stripDelayPrefix(routingKey)}`;
}

/** Removes one leading delay prefix (`0.1.…` of 28 digits) from a routing key (kombu #2556). */
export function stripDelayPrefix(routingKey: string): string {
  return routingKey.replace(DELAY_PREFIX, '');
}

/** `headers` without RabbitMQ's dead-letter headers ({@link X_DEATH_HEADERS}). */
export function withoutDeathHeaders<T>(headers: Record<string, T>): Record<string, T> {
  const out: Record<string, T> = {};
  for (const key of Object.keys(headers)) if (!X_DEATH_HEADERS.includes(key)) out[key] = headers[key];
  return out;
}

/**
 * The queues Celery knows for these settings (its `app.amqp.queues`), by name; a name it does not
 * know is created as Celery's `Queues.new_missing` does (its own direct exchange, routing key = name).
 */
export class QueueTable {
  private readonly known = new Map<string, QueueDeclaration>();
  private readonly missing = new Map<string, QueueDeclaration>();

  constructor(readonly settings: RoutingSettings) {
    const defaultExchange = exchange(settings.defaultExchange, settings.defaultExchangeType);
    if (settings.queues.length === 0) {
      const args = settings.queueType === 'quorum' ? { 'x-queue-type': 'quorum' } : {};
      this.known.set(settings.defaultQueue, this.queue(settings.defaultQueue, defaultExchange, settings.defaultRoutingKey || settings.defaultQueue, args));
    }
    for (const [name, def] of settings.queues) {
      // kombu: an unnamed exchange becomes the default exchange; a named one is direct unless typed.
      const ex = def.exchange ? exchange(def.exchange, def.exchangeType ?? 'direct') : defaultExchange;
      this.known.set(name, this.queue(name, ex, def.routingKey || name, { ...def.arguments }));
    }
    for (const name of settings.extraQueues) this.get(name);
  }

  /** The declaration of `name`: a configured queue, or one created as missing. */
  get(name: string): QueueDeclaration {
    const found = this.known.get(name) ?? this.missing.get(name);
    if (found) return found;
    const args = this.settings.createMissingQueueType === 'quorum' ? { 'x-queue-type': 'quorum' } : {};
    const created = this.queue(name, exchange(name, 'direct'), name, args);
    this.missing.set(name, created);
    return created;
  }

  /** Every queue in the table: the configured ones, then those created as missing (the worker's). */
  all(): QueueDeclaration[] {
    return [...this.known.values(), ...this.missing.values()];
  }

  /**
   * Celery's `detect_quorum_queues`: some queue of the table is a quorum queue. Turns on
   * per-consumer QoS, the delayed-delivery topology and delayed publishing.
   */
  get quorum(): boolean {
    return this.all().some((q) => q.arguments['x-queue-type'] === 'quorum');
  }

  private queue(name: string, ex: ExchangeDeclaration, routingKey: string, own: Record<string, unknown>): QueueDeclaration {
    const args: Record<string, unknown> = { ...this.settings.queueArguments, ...own };
    if (this.settings.queueMaxPriority !== null && !('x-max-priority' in args)) args['x-max-priority'] = this.settings.queueMaxPriority;
    return { name, exchange: ex, routingKey, durable: true, autoDelete: false, arguments: args };
  }
}

function exchange(name: string, type: ExchangeType): ExchangeDeclaration {
  return { name, type, durable: true, autoDelete: false };
}

/** The frames of kombu's `Queue.declare`: exchange, queue, binding. */
export function queueTopology(queue: QueueDeclaration): TopologyStep[] {
  const steps: TopologyStep[] = [];
  const ex = queue.exchange;
  if (ex.name && !ex.name.startsWith('amq.')) steps.push({ kind: 'exchange.declare', exchange: ex.name, type: ex.type, durable: ex.durable, autoDelete: ex.autoDelete });
  steps.push({ kind: 'queue.declare', queue: queue.name, durable: queue.durable, exclusive: false, autoDelete: queue.autoDelete, arguments: { ...queue.arguments } });
  if (ex.name) steps.push({ kind: 'queue.bind', queue: queue.name, exchange: ex.name, routingKey: queue.routingKey });
  return steps;
}

/**
 * kombu's `declare_native_delayed_delivery_exchanges_and_queues`: 28 levels of topic exchange +
 * queue (TTL 2^L s, dead-lettering to the level below), their bindings, the exchange-to-exchange
 * bindings and `celery_delayed_delivery`: 113 frames.
 */
export function delayedDeliveryTopology(queueType: QueueType): TopologyStep[] {
  const steps: TopologyStep[] = [];
  const level = (l: number) => `celery_delayed_${l}`;
  let key = '1.#';
  for (let l = DELAY_BITS - 1; l >= 0; l--) {
    steps.push({ kind: 'exchange.declare', exchange: level(l), type: 'topic', durable: true, autoDelete: false });
    const args: Record<string, unknown> = {
      'x-queue-type': queueType,
      'x-overflow': 'reject-publish',
      'x-message-ttl': 2 ** l * 1000,
      'x-dead-letter-exchange': l > 0 ? level(l - 1) : DELAYED_DELIVERY_EXCHANGE,
    };
    if (queueType === 'quorum') args['x-dead-letter-strategy'] = 'at-least-once';
    steps.push({ kind: 'queue.declare', queue: level(l), durable: true, exclusive: false, autoDelete: false, arguments: args });
    steps.push({ kind: 'queue.bind', queue: level(l), exchange: level(l), routingKey: key });
    key = `*.${key}`;
  }
  key = '0.#';
  for (let l = DELAY_BITS - 1; l > 0; l--) {
    steps.push({ kind: 'exchange.bind', destination: level(l - 1), source: level(l), routingKey: key });
    key = `*.${key}`;
  }
  steps.push({ kind: 'exchange.declare', exchange: DELAYED_DELIVERY_EXCHANGE, type: 'topic', durable: true, autoDelete: false });
  steps.push({ kind: 'exchange.bind', destination: DELAYED_DELIVERY_EXCHANGE, source: level(0), routingKey: key });
  return steps;
}

/**
 * kombu's `bind_queue_to_native_delayed_delivery_exchange` for each queue: a queue behind a
 * non-direct exchange gets `celery_delayed_delivery → exchange` and `exchange → queue` bindings
 * with the key `#.<binding key>`; direct exchanges are skipped (they cannot match the prefix).
 */
export function delayedDeliveryBindings(queues: readonly QueueDeclaration[]): TopologyStep[] {
  const steps: TopologyStep[] = [];
  for (const q of queues) {
    if (q.exchange.type === 'direct' || !q.exchange.name) continue;
    const key = q.routingKey.startsWith('#') ? q.routingKey : `#.${q.routingKey}`;
    steps.push({ kind: 'exchange.bind', destination: q.exchange.name, source: DELAYED_DELIVERY_EXCHANGE, routingKey: key });
    steps.push({ kind: 'queue.bind', queue: q.name, exchange: q.exchange.name, routingKey: key });
  }
  return steps;
}

/** Normalizes `taskRoutes` into routers; throws a `TypeError` naming what is wrong. */
export function prepareRouters(input: TaskRoutesInput | null | undefined): Router[] {
  if (input === null || input === undefined) return [];
  const list = Array.isArray(input) && !isPairList(input) ? input : [input];
  return list.map((entry, i) => {
    if (typeof entry === 'function') return entry as RouteFunction;
    const router: Router = { exact: new Map(), patterns: [] };
    const pairs: [string | RegExp, RouteTarget][] = Array.isArray(entry) ? (entry as [string | RegExp, RouteTarget][]) : Object.entries(entry as Record<string, RouteTarget>);
    for (const pair of pairs) {
      if (!Array.isArray(pair) || pair.length !== 2) throw new TypeError(`router ${i}: each entry must be [name or pattern, target]`);
      const [key, target] = pair;
      checkTarget(target, `route ${String(key)}`);
      if (key instanceof RegExp) router.patterns.push([key, target]);
      else if (typeof key !== 'string' || !key) throw new TypeError(`router ${i}: a route key must be a task name, a glob or a RegExp`);
      else if (key.includes('*')) router.patterns.push([globToRegExp(key), target]);
      else router.exact.set(key, target);
    }
    return router;
  });
}

function isPairList(value: unknown[]): boolean {
  return value.length > 0 && value.every((e) => Array.isArray(e) && e.length === 2 && (typeof e[0] === 'string' || e[0] instanceof RegExp));
}

const TARGET_KEYS = new Set(['queue', 'exchange', 'exchangeType', 'routingKey', 'priority']);

/** Checks one route target; a function router's answer is checked the same way when it is used. */
export function checkTarget(target: unknown, where: string): asserts target is RouteTarget {
  if (typeof target === 'string') {
    if (!target) throw new TypeError(`${where}: the queue name must not be empty`);
    return;
  }
  if (typeof target !== 'object' || target === null || Array.isArray(target)) throw new TypeError(`${where}: must be a queue name or { queue, exchange, exchangeType, routingKey, priority }`);
  const t = target as Record<string, unknown>;
  for (const key of Object.keys(t)) if (!TARGET_KEYS.has(key)) throw new TypeError(`${where}: unknown key "${key}" (use queue, exchange, exchangeType, routingKey, priority)`);
  for (const key of ['queue', 'exchange', 'routingKey'] as const) if (t[key] !== undefined && typeof t[key] !== 'string') throw new TypeError(`${where}: ${key} must be a string`);
  if (t.exchangeType !== undefined && !EXCHANGE_TYPES.includes(t.exchangeType as ExchangeType)) throw new TypeError(`${where}: exchangeType must be one of ${EXCHANGE_TYPES.join(', ')}`);
  if (t.priority !== undefined && (typeof t.priority !== 'number' || !Number.isInteger(t.priority) || t.priority < 0 || t.priority > 255)) throw new TypeError(`${where}: priority must be an integer 0-255`);
}

/** Python's `fnmatch.translate` for the globs Celery accepts (`*`, `?`, `[seq]`, `[!seq]`), anchored. */
export function globToRegExp(glob: string): RegExp {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*') out += '.*';
    else if (c === '?') out += '.';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 2);
      if (end < 0) out += '\\[';
      else {
        let body = glob.slice(i + 1, end);
        if (body.startsWith('!')) body = `^${body.slice(1)}`;
        out += `[${body.replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else out += c.replace(/[.+^${}()|\\/\]]/g, '\\$&');
  }
  return new RegExp(`^(?:${out})$`, 's');
}

function lookupRoute(routers: readonly Router[], name: string, args: readonly unknown[], kwargs: Record<string, unknown>, options: RouteOptions): RouteOptions | null {
  for (const router of routers) {
    let target: RouteTarget | null | undefined;
    if (typeof router === 'function') {
      target = router(name, args, kwargs, options);
      if (target === null || target === undefined) continue;
      checkTarget(target, `taskRoutes function for ${name}`);
    } else {
      target = router.exact.get(name);
      if (target === undefined) target = router.patterns.find(([re]) => re.test(name))?.[1];
      if (target === undefined) continue;
    }
    return typeof target === 'string' ? { queue: target } : { ...target };
  }
  return null;
}

/** Celery's `lpmerge(left, right)`: `right`'s defined values over `left`'s. */
function lpmerge(left: RouteOptions, right: RouteOptions): RouteOptions {
  const out: RouteOptions = { ...left };
  for (const [k, v] of Object.entries(right)) if (v !== undefined && v !== null) (out as Record<string, unknown>)[k] = v;
  return out;
}

export interface RouteRequest {
  /** Routing options of the call itself (`apply_async(queue=..., exchange=..., routing_key=...)`). */
  explicit?: RouteOptions;
  /** Routing options the task itself carries (`@Task({ queue })`): below the call's, above `taskRoutes`. */
  task?: RouteOptions;
  args?: readonly unknown[];
  kwargs?: Record<string, unknown>;
  /** Seconds until the task's ETA (its countdown), if it has one: decides native delayed delivery. */
  delaySeconds?: number | null;
}

/**
 * Where Celery 5.7 publishes a task: `Router.route` (the call's options, then the task's, over the
 * first matching route, else the default queue), the native delayed-delivery decision of
 * `send_task` (a quorum queue configured, a non-direct destination exchange and a delay of at
 * least one second: exchange `celery_delayed_27`, the 28-digit key), and `send_task_message`
 * (a direct exchange without both exchange and routing key is published through the default
 * exchange `''` with the queue's name).
 *
 * Differences from Celery: a delay under one second, which makes Celery raise `ValueError`, is
 * published without delayed delivery (the worker holds it briefly); a route that names an
 * exchange but no queue and no exchange type, which makes Celery raise `KeyError` on a delayed
 * send, counts as direct (no delayed delivery).
 */
export function routeTask(table: QueueTable, name: string, request: RouteRequest = {}): Destination {
  const s = table.settings;
  let options = lpmerge(request.task ?? {}, request.explicit ?? {});
  const route = s.routers.length > 0 ? lookupRoute(s.routers, name, request.args ?? [], request.kwargs ?? {}, options) : null;
  if (route) options = lpmerge(route, options);
  else if (!options.queue) options = lpmerge({ queue: s.defaultQueue }, options);
  let queue = options.queue ? table.get(options.queue) : null;
  let exchangeName = options.exchange;
  let routingKey = options.routingKey;
  let exchangeType = options.exchangeType;
  const delay = request.delaySeconds ?? 0;
  if (delay >= 1 && table.quorum) {
    const type = queue ? queue.exchange.type : (exchangeType ?? 'direct');
    const key = queue ? queue.routingKey : routingKey;
    if (type !== 'direct' && key) {
      return { exchange: DELAYED_ENTRY_EXCHANGE, routingKey: calculateDelayedRoutingKey(Math.trunc(delay), key), declare: null, queue, priority: options.priority, delayed: true };
    }
  }
  // AMQP.send_task_message
  if (!queue && exchangeName === undefined) queue = table.get(s.defaultQueue);
  exchangeType ??= queue ? queue.exchange.type : 'direct';
  if ((!exchangeName || !routingKey) && exchangeType === 'direct') {
    if (!queue) throw new RangeError(`task ${name}: a route to exchange ${JSON.stringify(exchangeName)} needs a routing key or a queue`);
    exchangeName = '';
    routingKey = queue.name;
  } else if (exchangeName === undefined) {
    exchangeName = (queue as QueueDeclaration).exchange.name || s.defaultExchange;
    routingKey = routingKey || (queue as QueueDeclaration).routingKey || s.defaultRoutingKey;
  }
  if (routingKey === undefined) throw new RangeError(`task ${name}: no routing key for exchange ${JSON.stringify(exchangeName)}`);
  return { exchange: exchangeName, routingKey, declare: queue, queue, priority: options.priority, delayed: false };
}

/** What the retry of a delivered task needs to know about the delivery (Celery's `delivery_info`). */
export interface DeliveryInfo {
  exchange: string;
  routingKey: string;
  priority?: number;
}

/**
 * Where Celery 5.7's `Task.retry` publishes the new message (`signature_from_request` + `send_task`):
 * to `queue` when given; otherwise back where the delivery came from — the queue named by the
 * routing key when it came through the default exchange, else the same exchange and routing key —
 * through the task's routes, and through native delayed delivery when Celery would use it (its
 * routing key's old delay prefix stripped). The priority of the delivery is kept.
 * Strip {@link X_DEATH_HEADERS} from the retried message's headers as well.
 */
export function retryDestination(table: QueueTable, name: string, delivery: DeliveryInfo, retry: { countdownSeconds?: number | null; queue?: string; args?: readonly unknown[]; kwargs?: Record<string, unknown> } = {}): Destination {
  let explicit: RouteOptions;
  if (retry.queue) explicit = { queue: retry.queue };
  else if (delivery.exchange === '' && delivery.routingKey) explicit = { queue: delivery.routingKey };
  else explicit = { exchange: delivery.exchange, routingKey: delivery.routingKey };
  if (delivery.priority !== undefined && delivery.priority !== null) explicit.priority = delivery.priority;
  return routeTask(table, name, { explicit, args: retry.args, kwargs: retry.kwargs, delaySeconds: retry.countdownSeconds ?? null });
}

/** AMQP topic matching: `*` is exactly one word, `#` zero or more; words are separated by dots. */
export function topicMatches(pattern: string, routingKey: string): boolean {
  const p = pattern.split('.');
  const k = routingKey.split('.');
  const memo = new Map<string, boolean>();
  const match = (i: number, j: number): boolean => {
    const id = `${i},${j}`;
    const known = memo.get(id);
    if (known !== undefined) return known;
    let result: boolean;
    if (i === p.length) result = j === k.length;
    else if (p[i] === '#') result = match(i + 1, j) || (j < k.length && match(i, j + 1));
    else result = j < k.length && (p[i] === '*' || p[i] === k[j]) && match(i + 1, j + 1);
    memo.set(id, result);
    return result;
  };
  return match(0, 0);
}

/** Does a binding with `bindingKey` on an exchange of `type` take a message published with `routingKey`? (`headers`: not modelled, false.) */
export function bindingTakes(type: ExchangeType, bindingKey: string, routingKey: string): boolean {
  if (type === 'fanout') return true;
  if (type === 'direct') return bindingKey === routingKey;
  if (type === 'topic') return topicMatches(bindingKey, routingKey);
  return false;
}

/** The declaration of a queue without any routing settings: Celery's default topology for a queue name (its own direct exchange). */
export function plainQueue(name: string, queueArguments?: Record<string, unknown> | null): QueueDeclaration {
  return { name, exchange: exchange(name, 'direct'), routingKey: name, durable: true, autoDelete: false, arguments: { ...queueArguments } };
}
