import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { EventMessage } from '../../../lib/broker/broker.interface';
import { EventDispatcher } from '../../../lib/events/event-dispatcher';
import {
  EVENT_BUFFER_LIMIT,
  eventRoutingKey,
  exceptionRepr,
  LamportClock,
  loadavgOf,
  platformSystem,
  taskEndedEvent,
  taskFailedFields,
  taskMessageInfo,
  taskReceivedFields,
  taskRetriedFields,
  taskRevokedFields,
  taskSentFields,
  taskStartedFields,
  taskSucceededFields,
  utcoffsetHours,
  workerEventFields,
} from '../../../lib/protocol/events';
import { celeryException } from '../../../lib/protocol/exceptions';

/**
 * Golden tests against the events of a real Celery 5.7 worker started with -E, and a client with
 * task_send_sent_event (test/fixtures/celery-events-5.7.json, made by test/fixtures/celery-events.py):
 * our event bodies carry the same keys with the same JSON types, and the same values where they
 * are the same (reprs, routing keys, headers, batching).
 */
interface Captured {
  routing_key: string;
  exchange: string;
  headers: Record<string, unknown>;
  delivery_mode: number;
  content_type: string;
  body: Record<string, unknown> | Record<string, unknown>[];
}
const fixture = JSON.parse(readFileSync(join(__dirname, '..', '..', 'fixtures', 'celery-events-5.7.json'), 'utf8')) as {
  node: string;
  task_ids: Record<string, string>;
  messages: Captured[];
};
const bodies = fixture.messages.flatMap((m) => (Array.isArray(m.body) ? m.body : [m.body]));
const python = (type: string, id?: string): Record<string, unknown> => {
  const found = bodies.find((b) => b.type === type && (id === undefined || b.uuid === id));
  if (!found) throw new Error(`no ${type} in the fixture`);
  return found;
};

/** The JSON type of each key: what a consumer (Flower, celery events, State) reads. */
function shape(event: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of Object.keys(event).sort()) {
    const v = event[key];
    out[key] = v === null ? 'null' : Array.isArray(v) ? `array(${v.map((x) => typeof x).join(',')})` : typeof v;
  }
  return out;
}

/** Our events as a dispatcher publishes them, decoded. */
function capture(hostname = 'nestjs@golden', bufferGroups: string[] = ['task']) {
  const sent: EventMessage[] = [];
  const clock = new LamportClock();
  const dispatcher = new EventDispatcher({
    broker: { publishEvent: (e: EventMessage) => (sent.push(e), true) },
    hostname,
    clock,
    bufferGroups,
  });
  const decoded = () => sent.map((m) => ({ ...m, body: JSON.parse(m.body.toString('utf8')) as Record<string, unknown> | Record<string, unknown>[] }));
  return { dispatcher, sent, decoded, clock };
}

function ours(type: string, fields: Record<string, unknown>, hostname?: string): Record<string, unknown> {
  const { dispatcher, decoded } = capture(hostname, []);
  dispatcher.send(type, fields);
  return decoded()[0].body as Record<string, unknown>;
}

const ids = fixture.task_ids;
const addInfo = taskMessageInfo({
  id: ids.add,
  task: 'ev.add',
  rootId: ids.add,
  parentId: null,
  retries: 0,
  args: [2, 3],
  kwargs: {},
  headers: { argsrepr: '(2, 3)', kwargsrepr: '{}', eta: null, expires: null },
});

describe('events: golden against a real Celery 5.7 worker (-E)', () => {
  it('the fixture holds every event kind we send', () => {
    const types = new Set(bodies.map((b) => b.type));
    for (const t of ['worker-online', 'worker-heartbeat', 'worker-offline', 'task-sent', 'task-received', 'task-started', 'task-succeeded', 'task-failed', 'task-retried', 'task-revoked']) {
      expect(types).toContain(t);
    }
  });

  it.each(['worker-online', 'worker-heartbeat', 'worker-offline'])('%s: same keys and types as Python (sw_ident names us)', (type) => {
    const theirs = python(type);
    const mine = ours(type, workerEventFields({ freq: 2.0, active: 0, processed: 6, loadavg: [3.3, 1.99, 1.89] }, { sw_ident: 'nestjs-celery', sw_ver: '0.1.0', sw_sys: 'Linux' }));
    expect(shape(mine)).toEqual(shape(theirs));
    expect(mine.sw_ident).toBe('nestjs-celery');
    expect(theirs.sw_ident).toBe('py-celery');
    expect(mine.freq).toBe(theirs.freq);
  });

  it('task-sent: same keys, types and values as a Python client sends (but our argsrepr is a list)', () => {
    const theirs = python('task-sent', ids.add);
    const mine = ours('task-sent', taskSentFields(addInfo, { queue: theirs.queue as string, exchange: '', routingKey: theirs.routing_key as string }), theirs.hostname as string);
    expect(shape(mine)).toEqual(shape(theirs));
    for (const key of ['uuid', 'root_id', 'parent_id', 'name', 'args', 'kwargs', 'retries', 'eta', 'expires', 'queue', 'exchange', 'routing_key', 'hostname']) {
      expect([key, mine[key]]).toEqual([key, theirs[key]]);
    }
  });

  it('task-received / task-started: same keys, types and values', () => {
    const received = python('task-received', ids.add);
    expect(shape(ours('task-received', taskReceivedFields(addInfo)))).toEqual(shape(received));
    const mine = ours('task-received', taskReceivedFields(addInfo));
    for (const key of ['uuid', 'name', 'args', 'kwargs', 'root_id', 'parent_id', 'retries', 'eta', 'expires']) expect([key, mine[key]]).toEqual([key, received[key]]);
    expect(shape(ours('task-started', taskStartedFields(ids.add)))).toEqual(shape(python('task-started', ids.add)));
  });

  it('task-succeeded: result is the repr Python writes, runtime in seconds', () => {
    const add = python('task-succeeded', ids.add);
    const mine = ours('task-succeeded', taskSucceededFields(ids.add, 5, 0.0017));
    expect(shape(mine)).toEqual(shape(add));
    expect(mine.result).toBe(add.result); // '5'
    const echo = python('task-succeeded', ids.echo);
    expect(taskSucceededFields(ids.echo, { text: 'hi', n: [1, 2.5, null, true] }, 0.001).result).toBe(echo.result);
    expect(taskSucceededFields(ids.retry_once, 'retried', 0.001).result).toBe(python('task-succeeded', ids.retry_once).result);
  });

  it('task-failed / task-retried: the exception as Python repr() writes it', () => {
    const failed = python('task-failed', ids.fail);
    const mine = ours('task-failed', taskFailedFields(ids.fail, { exc_type: 'ValueError', exc_message: ['boom'], exc_module: 'builtins' }, 'Error: boom\n    at ...'));
    expect(shape(mine)).toEqual(shape(failed));
    expect(mine.exception).toBe(failed.exception);
    const retried = python('task-retried', ids.retry_once);
    const mineRetried = ours('task-retried', taskRetriedFields(ids.retry_once, { exc_type: 'RuntimeError', exc_message: ['again'], exc_module: 'builtins' }, 'Retry in 0s'));
    expect(shape(mineRetried)).toEqual(shape(retried));
    expect(mineRetried.exception).toBe(retried.exception);
  });

  it('task-revoked of an expired task: terminated false, signum null, expired true', () => {
    const revoked = python('task-revoked', ids.expired);
    const mine = ours('task-revoked', taskRevokedFields(ids.expired, { terminated: false, signum: null, expired: true }));
    expect(shape(mine)).toEqual(shape(revoked));
    for (const key of ['terminated', 'signum', 'expired']) expect(mine[key]).toEqual(revoked[key]);
    // what the worker derives from the REVOKED row it stores
    expect(taskEndedEvent(ids.expired, { status: 'REVOKED', result: celeryException('TaskRevokedError', 'expired'), traceback: null }, 0)?.fields).toEqual(
      taskRevokedFields(ids.expired, { terminated: false, signum: null, expired: true }),
    );
  });

  it('messages: exchange celeryev, routing key = type with - → ., header {hostname}, delivery mode 1; task events as task.multi lists', () => {
    for (const m of fixture.messages) {
      expect(m.exchange).toBe('celeryev');
      expect(m.delivery_mode).toBe(1);
      expect(m.content_type).toBe('application/json');
      if (Array.isArray(m.body)) {
        expect(m.routing_key).toBe('task.multi');
        expect(m.headers).toEqual({ hostname: fixture.node });
        expect(m.body.length).toBeLessThanOrEqual(EVENT_BUFFER_LIMIT);
      } else {
        expect(m.routing_key).toBe(eventRoutingKey(m.body.type as string));
        expect(m.headers).toEqual({ hostname: m.body.hostname });
      }
    }
    // ours
    const { dispatcher, decoded } = capture('nestjs@golden');
    dispatcher.send('worker-online', workerEventFields({ freq: 2, active: 0, processed: 0, loadavg: [0, 0, 0] }, { sw_ident: 'nestjs-celery', sw_ver: '0', sw_sys: 'Linux' }));
    dispatcher.send('task-started', taskStartedFields(ids.add));
    dispatcher.flush();
    const [online, multi] = decoded();
    expect(online).toMatchObject({ exchange: 'celeryev', routingKey: 'worker.online', headers: { hostname: 'nestjs@golden' } });
    expect(multi.routingKey).toBe('task.multi');
    expect(Array.isArray(multi.body)).toBe(true);
    expect(multi.headers).toEqual({ hostname: 'nestjs@golden' });
  });

  it("Python's clock: each node's events carry increasing clocks", () => {
    const clocks = bodies.filter((b) => b.hostname === fixture.node).map((b) => b.clock as number);
    expect(clocks).toEqual([...clocks].sort((a, b) => a - b));
    expect(new Set(clocks).size).toBe(clocks.length);
  });
});

describe('events: building blocks', () => {
  it("loadavg is rounded up to two decimals as Celery's load_average()", () => {
    expect(loadavgOf([3.601, 2.0100001, 1.9])).toEqual([3.61, 2.02, 1.9]);
    expect(loadavgOf([])).toEqual([0, 0, 0]);
  });

  it('utcoffset is hours west of UTC (Celery 5.7: true division)', () => {
    const cet = { getTimezoneOffset: () => -60 } as Date;
    const india = { getTimezoneOffset: () => -330 } as Date;
    const newYork = { getTimezoneOffset: () => 300 } as Date;
    expect(utcoffsetHours(cet)).toBe(-1);
    expect(utcoffsetHours(india)).toBe(-5.5);
    expect(utcoffsetHours(newYork)).toBe(5);
    expect(Object.is(utcoffsetHours({ getTimezoneOffset: () => -0 } as Date), 0)).toBe(true);
  });

  it("Lamport clock: forward +1 on send, adjust to max(own, received) + 1 on receipt", () => {
    const clock = new LamportClock();
    expect(clock.forward()).toBe(1);
    expect(clock.adjust(10)).toBe(11);
    expect(clock.adjust(3)).toBe(12);
    expect(clock.adjust('junk')).toBe(13);
    expect(clock.forward()).toBe(14);
  });

  it('exception repr: no args, one, several; a NotRegistered as Celery sends it', () => {
    expect(exceptionRepr({ exc_type: 'Exception', exc_message: [], exc_module: 'builtins' })).toBe('Exception()');
    expect(exceptionRepr({ exc_type: 'KeyError', exc_message: ['a', 2], exc_module: 'builtins' })).toBe("KeyError('a', 2)");
    expect(exceptionRepr(celeryException('NotRegistered', 'ev.missing'))).toBe("NotRegistered('ev.missing')");
  });

  it('sw_sys is Python platform.system()', () => {
    expect(platformSystem('linux')).toBe('Linux');
    expect(platformSystem('darwin')).toBe('Darwin');
    expect(platformSystem('win32')).toBe('Windows');
  });
});

describe('EventDispatcher', () => {
  it('stamps hostname, utcoffset, pid, clock, timestamp and type', () => {
    const { dispatcher, decoded } = capture('nestjs@x', []);
    dispatcher.send('worker-heartbeat', { freq: 2 });
    const body = decoded()[0].body as Record<string, unknown>;
    expect(body).toMatchObject({ hostname: 'nestjs@x', pid: process.pid, clock: 1, type: 'worker-heartbeat', freq: 2 });
    expect(typeof body.utcoffset).toBe('number');
    expect(Math.abs((body.timestamp as number) - Date.now() / 1000)).toBeLessThan(5);
  });

  it('a burst of task events goes out as task.multi lists of at most 24, the rest at the next turn of the loop', async () => {
    const { dispatcher, decoded } = capture();
    for (let i = 0; i < 30; i++) dispatcher.send('task-started', taskStartedFields(`id-${i}`));
    expect(decoded().map((m) => (m.body as unknown[]).length)).toEqual([24]);
    await new Promise((resolve) => setImmediate(resolve));
    const lists = decoded().map((m) => m.body as Record<string, unknown>[]);
    expect(lists.map((l) => l.length)).toEqual([24, 6]);
    const clocks = lists.flat().map((e) => e.clock as number);
    expect(clocks).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
  });

  it('a lone task event goes out at the next turn of the loop, as a list of one', async () => {
    const { dispatcher, decoded } = capture();
    dispatcher.send('task-received', taskReceivedFields(addInfo));
    expect(decoded()).toHaveLength(0);
    await new Promise((resolve) => setImmediate(resolve));
    expect(decoded()).toHaveLength(1);
    expect((decoded()[0].body as unknown[]).length).toBe(1);
  });

  it('never throws: a broker that throws, or a value JSON cannot hold, drops the event', () => {
    const warnings: string[] = [];
    const dispatcher = new EventDispatcher({
      broker: {
        publishEvent: () => {
          throw new Error('socket gone');
        },
      },
      hostname: 'nestjs@x',
      clock: new LamportClock(),
      logger: { warn: (m: string) => warnings.push(m) },
    });
    expect(() => dispatcher.send('worker-online', {})).not.toThrow();
    expect(warnings[0]).toMatch(/worker.online not sent: socket gone/);
  });

  it('closed: sends nothing more', () => {
    const { dispatcher, decoded } = capture('nestjs@x', []);
    dispatcher.close();
    dispatcher.send('worker-heartbeat', {});
    expect(decoded()).toHaveLength(0);
  });
});
