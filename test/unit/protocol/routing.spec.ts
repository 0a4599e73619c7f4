import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { normalizeCeleryOptions } from '../../../lib/config/normalize-options';
import type { CeleryOptionsInput } from '../../../lib/interfaces/celery-options.interface';
import {
  calculateDelayedRoutingKey,
  delayedDeliveryBindings,
  delayedDeliveryTopology,
  globToRegExp,
  QueueTable,
  queueTopology,
  retryDestination,
  routeTask,
  stripDelayPrefix,
  TopologyStep,
  withoutDeathHeaders,
  X_DEATH_HEADERS,
} from '../../../lib/protocol/routing';

/** Frames and publishes captured from Celery 5.7 / kombu 5.7 (test/interop/python/capture_routing.py). */
interface Publish {
  exchange: string;
  routing_key: string;
  declare: string[];
  x_headers: string[];
}
interface CapturedCase {
  name: string;
  settings: Record<string, unknown>;
  quorum: boolean;
  declared: unknown[][];
  delayed: unknown[][];
  delayedBindings: unknown[][];
  sends: { task: string; queue?: string; options?: Record<string, unknown>; publish?: Publish; error?: string }[];
  retries: { task?: string; exchange: string; routing_key: string; countdown: number | null; priority?: number; publish?: Publish; x_headers?: string[] }[];
}
const CAPTURE = JSON.parse(readFileSync(join(__dirname, '..', '..', 'fixtures', 'celery-routing-5.7.json'), 'utf8')) as { celery: string; cases: CapturedCase[] };

/** A step as the capture writes a frame. */
function frame(step: TopologyStep): unknown[] {
  switch (step.kind) {
    case 'exchange.declare':
      return ['exchange.declare', step.exchange, step.type, { durable: step.durable, auto_delete: step.autoDelete }, []];
    case 'queue.declare':
      return ['queue.declare', step.queue, { durable: step.durable, exclusive: step.exclusive, auto_delete: step.autoDelete }, Object.entries(step.arguments)];
    case 'queue.bind':
      return ['queue.bind', step.queue, step.exchange, step.routingKey];
    case 'exchange.bind':
      return ['exchange.bind', step.destination, step.source, step.routingKey];
  }
}

function tableFor(c: CapturedCase): QueueTable {
  const declared = c.declared.filter((f) => f[0] === 'queue.declare').map((f) => f[1] as string);
  // x-max-priority on a quorum queue is refused at startup (RabbitMQ refuses it): the table alone still declares it as Celery does.
  const { task_queue_max_priority: maxPriority, ...settings } = c.settings;
  const config = normalizeCeleryOptions({ ...settings, worker: { queues: declared } } as CeleryOptionsInput);
  return new QueueTable({ ...config.routing, queueMaxPriority: (maxPriority as number | undefined) ?? null });
}

describe(`routing: what Celery ${CAPTURE.celery} declares and where it publishes`, () => {
  describe.each(CAPTURE.cases.map((c) => [c.name, c] as const))('settings "%s"', (_name, c) => {
    it('declares every queue with the same exchange, type, flags, arguments (in order) and binding', () => {
      const table = tableFor(c);
      const names = c.declared.filter((f) => f[0] === 'queue.declare').map((f) => f[1] as string);
      expect(names.flatMap((n) => queueTopology(table.get(n)).map(frame))).toEqual(c.declared);
    });

    it('detects quorum mode and declares the native delayed-delivery topology and bindings as Celery does', () => {
      const table = tableFor(c);
      expect(table.quorum).toBe(c.quorum);
      if (!c.quorum) return;
      expect(delayedDeliveryTopology(table.settings.delayedDeliveryQueueType).map(frame)).toEqual(c.delayed);
      expect(delayedDeliveryBindings(table.all()).map(frame)).toEqual(c.delayedBindings);
    });

    const sends = c.sends.filter((s) => s.publish);
    if (sends.length > 0) {
      it.each(sends.map((s) => [`${s.task} ${s.queue ?? ''} ${JSON.stringify(s.options ?? {})}`, s] as const))('publishes %s where Celery does', (_label, s) => {
        const table = tableFor(c);
        const o = s.options ?? {};
        const dest = routeTask(table, s.task, {
          explicit: { queue: s.queue, exchange: o.exchange as string | undefined, routingKey: o.routing_key as string | undefined },
          delaySeconds: (o.countdown as number | undefined) ?? (o.eta_in as number | undefined) ?? null,
        });
        expect({ exchange: dest.exchange, routing_key: dest.routingKey, declare: dest.declare ? [dest.declare.name] : [] }).toEqual({
          exchange: s.publish?.exchange,
          routing_key: s.publish?.routing_key,
          declare: s.publish?.declare,
        });
        expect(dest.delayed).toBe(s.publish?.exchange === 'celery_delayed_27');
      });
    }

    if (c.retries.length > 0) {
      it.each(c.retries.map((r) => [`${r.task ?? 't.retrying'} from ${r.exchange}/${r.routing_key.slice(-12)} countdown ${r.countdown}`, r] as const))(
        'retries %s where Celery does',
        (_label, r) => {
          const table = tableFor(c);
          const dest = retryDestination(table, r.task ?? 't.retrying', { exchange: r.exchange, routingKey: r.routing_key, priority: r.priority }, { countdownSeconds: r.countdown });
          expect({ exchange: dest.exchange, routing_key: dest.routingKey, declare: dest.declare ? [dest.declare.name] : [] }).toEqual({
            exchange: r.publish?.exchange,
            routing_key: r.publish?.routing_key,
            declare: r.publish?.declare,
          });
          if (r.priority !== undefined) expect(dest.priority).toBe(r.priority);
          // Celery's retried message carries none of RabbitMQ's dead-letter headers
          expect(r.publish?.x_headers).toEqual(['x-custom']);
        },
      );
    }
  });

  it('refuses at startup what Celery sends and RabbitMQ refuses: x-max-priority on a quorum queue', () => {
    const quorumPriority = CAPTURE.cases.find((c) => c.name === 'quorum-priority') as CapturedCase;
    expect(() => normalizeCeleryOptions(quorumPriority.settings as CeleryOptionsInput)).toThrow(/task_queue_max_priority \(queueMaxPriority\): quorum queue celery would be declared with x-max-priority/);
    expect(() => normalizeCeleryOptions({ taskQueues: { q: { arguments: { 'x-queue-type': 'quorum', 'x-max-priority': 3 } } } })).toThrow(/taskQueues\.q\.arguments/);
  });

  it('differs from Celery on a delay under one second: published normally (Celery raises ValueError)', () => {
    const quorumTopic = CAPTURE.cases.find((c) => c.name === 'quorum-topic') as CapturedCase;
    expect(quorumTopic.sends.find((s) => s.options?.countdown === 0.5)?.error).toMatch(/ValueError/);
    const dest = routeTask(tableFor(quorumTopic), 't.plain', { delaySeconds: 0.5 });
    expect(dest).toMatchObject({ exchange: 'celery', routingKey: 'celery', delayed: false });
  });
});

describe('routing: delayed routing keys', () => {
  it('writes the delay as 28 binary digits before the routing key (spec §11.5: 100 s to celery)', () => {
    expect(calculateDelayedRoutingKey(100, 'celery')).toBe('0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.1.0.0.1.0.0.celery');
    expect(calculateDelayedRoutingKey(2 ** 28 - 1, 'q')).toBe(`${Array(28).fill('1').join('.')}.q`);
  });

  it('strips one old delay prefix, as kombu 5.7 does, so a retried key does not grow', () => {
    const once = calculateDelayedRoutingKey(100, 'celery');
    expect(calculateDelayedRoutingKey(5, once)).toBe('0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.1.celery');
    expect(stripDelayPrefix(once)).toBe('celery');
    expect(stripDelayPrefix('0.1.celery')).toBe('0.1.celery');
  });

  it('refuses a delay under one second or an empty routing key, as kombu does', () => {
    expect(() => calculateDelayedRoutingKey(0, 'celery')).toThrow(/positive/);
    expect(() => calculateDelayedRoutingKey(1, '')).toThrow(/non-empty/);
  });

  it('declares 113 frames', () => {
    expect(delayedDeliveryTopology('quorum')).toHaveLength(113);
  });
});

describe('routing: dead-letter headers', () => {
  it('lists the seven headers Celery 5.6.3+ strips on retry and removes exactly those', () => {
    expect(X_DEATH_HEADERS).toHaveLength(7);
    const headers = Object.fromEntries([...X_DEATH_HEADERS, 'x-custom', 'task'].map((k) => [k, 1]));
    expect(Object.keys(withoutDeathHeaders(headers))).toEqual(['x-custom', 'task']);
  });
});

describe('routing: taskRoutes', () => {
  const table = (input: CeleryOptionsInput) => new QueueTable(normalizeCeleryOptions(input).routing);

  it('matches exact names before globs, and globs in order, as Celery\'s MapRoute', () => {
    const t = table({ taskRoutes: { 'a.*': 'first', 'a.b': 'exact', '*': 'last' } });
    expect(routeTask(t, 'a.b').routingKey).toBe('exact');
    expect(routeTask(t, 'a.c').routingKey).toBe('first');
    expect(routeTask(t, 'z').routingKey).toBe('last');
  });

  it('tries routers in order, a function router first when listed first; null passes to the next', () => {
    const seen: unknown[] = [];
    const t = table({
      taskRoutes: [
        (name, args, kwargs) => {
          seen.push([name, args, kwargs]);
          return name === 'fn.me' ? { queue: 'by_fn', priority: 4 } : null;
        },
        { 'fn.*': 'by_map' },
      ],
    });
    expect(routeTask(t, 'fn.me', { args: [1], kwargs: { a: 2 } })).toMatchObject({ routingKey: 'by_fn', priority: 4 });
    expect(routeTask(t, 'fn.other').routingKey).toBe('by_map');
    expect(seen[0]).toEqual(['fn.me', [1], { a: 2 }]);
  });

  it('puts the call\'s queue over the task\'s, and the task\'s over the route (Celery\'s order)', () => {
    const t = table({ taskRoutes: { 'x.*': 'routed' } });
    expect(routeTask(t, 'x.y', { task: { queue: 'task_q' }, explicit: { queue: 'call_q' } }).routingKey).toBe('call_q');
    expect(routeTask(t, 'x.y', { task: { queue: 'task_q' } }).routingKey).toBe('task_q');
    expect(routeTask(t, 'x.y').routingKey).toBe('routed');
    expect(routeTask(t, 'other').routingKey).toBe('celery');
  });

  it('accepts snake_case route keys and RegExp patterns', () => {
    const t = table({ task_routes: [[/^re\./, { queue: 'rq', routing_key: 'k' }]] } as unknown as CeleryOptionsInput);
    expect(routeTask(t, 're.one').routingKey).toBe('rq');
  });

  it('rejects a route with an unknown key, naming it', () => {
    expect(() => normalizeCeleryOptions({ taskRoutes: { a: { queue: 'q', routingKye: 'x' } as never } })).toThrow(/taskRoutes.*unknown key "routingKye"/);
    expect(() => normalizeCeleryOptions({ taskRoutes: { a: { exchangeType: 'weird' } as never } })).toThrow(/exchangeType must be one of/);
  });

  it('rejects what a function router answers when it is not a route', () => {
    const t = table({ taskRoutes: () => 42 as never });
    expect(() => routeTask(t, 'any')).toThrow(/taskRoutes function for any/);
  });

  it('translates globs as Python\'s fnmatch', () => {
    expect(globToRegExp('tasks.*').test('tasks.a.b')).toBe(true);
    expect(globToRegExp('t?.x').test('ta.x')).toBe(true);
    expect(globToRegExp('t[!a].x').test('ta.x')).toBe(false);
    expect(globToRegExp('a.b*').test('aXb')).toBe(false);
  });
});
