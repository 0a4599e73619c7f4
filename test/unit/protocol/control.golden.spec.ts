import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  InvalidControlMessageError,
  isAddressedTo,
  isoformatUtc,
  parseControlRequest,
  queueAsDict,
  registeredReply,
  replyExpired,
  requestInfo,
  revokeReply,
  rusageOf,
  scheduledEntry,
  stampedHeadersOf,
  stampedHeadersRepr,
  taskIdsOf,
  terminateReply,
  unknownCommandReply,
  type RequestSnapshot,
} from '../../../lib/protocol/control';
import { plainQueue } from '../../../lib/protocol/routing';

/** Replies of a real Celery worker and the requests Python's app.control sent it (test/fixtures/celery_control.py). */
interface Fixture {
  node: string;
  queue: string;
  requests: Record<string, { body: Record<string, unknown>; headers: Record<string, unknown>; delivery_info: { exchange: string; routing_key: string } }>;
  replies: Record<string, Record<string, unknown>[]>;
  reply_messages: Record<string, { body: Record<string, unknown>; headers: Record<string, unknown>; properties: Record<string, unknown>; delivery_info: { exchange: string } }>;
}

const fixtures: [string, Fixture][] = ['5.7', '5.2'].map((v) => [v, JSON.parse(readFileSync(join(__dirname, '../../fixtures', `celery-control-replies-${v}.json`), 'utf8')) as Fixture]);

/** The one node's reply to a captured command. */
function replyOf(f: Fixture, label: string): unknown {
  const replies = f.replies[label];
  expect(replies).toHaveLength(1);
  return replies[0][f.node];
}

function snapshotLike(info: Record<string, unknown>): RequestSnapshot {
  const d = info.delivery_info as Record<string, unknown>;
  return {
    id: info.id as string,
    name: info.name as string,
    args: info.args as unknown[],
    kwargs: info.kwargs as Record<string, unknown>,
    argsrepr: null,
    kwargsrepr: null,
    hostname: info.hostname as string,
    timeStart: info.time_start as number | null,
    acknowledged: info.acknowledged as boolean,
    exchange: d.exchange as string,
    routingKey: d.routing_key as string,
    priority: d.priority as number,
    redelivered: d.redelivered as boolean,
    workerPid: info.worker_pid as number | null,
    etaMs: null,
  };
}

describe.each(fixtures)('remote control against replies of a real Celery %s worker', (version, f) => {
  it('reads the requests Python publishes: a call (ticket, reply_to) and a cast (revoke)', () => {
    const ping = f.requests.ping;
    expect(ping.delivery_info.exchange).toBe('celery.pidbox');
    const call = parseControlRequest(ping.body, ping.headers);
    expect(call).toMatchObject({ method: 'ping', arguments: {}, destination: [f.node], pattern: null, matcher: null });
    expect(call.ticket).toBe(ping.body.ticket);
    expect(call.replyTo).toEqual({ exchange: 'reply.celery.pidbox', routingKey: (ping.body.reply_to as { routing_key: string }).routing_key });
    expect(call.clock).toBe(ping.headers.clock);
    expect(call.expires).toBe(ping.headers.expires);

    const cast = parseControlRequest(f.requests.revoke_cast.body, f.requests.revoke_cast.headers);
    expect(cast).toMatchObject({ method: 'revoke', destination: null, ticket: null, replyTo: null });
    expect(taskIdsOf(cast.arguments.task_id)).toEqual([expect.stringMatching(/-cast$/)]);
  });

  it('sends the reply message as kombu does: reply exchange, routing key = oid, headers ticket and clock, transient JSON', () => {
    const m = f.reply_messages.ping;
    expect(m.delivery_info.exchange).toBe('reply.celery.pidbox');
    expect(Object.keys(m.headers).sort()).toEqual(['clock', 'ticket']);
    expect(m.properties).toMatchObject({ content_type: 'application/json', content_encoding: 'utf-8', delivery_mode: 1 });
    expect(m.body).toEqual({ [f.node]: { ok: 'pong' } });
  });

  it('answers an unknown command with the error kombu sends', () => {
    expect(unknownCommandReply('no_such_command')).toEqual(replyOf(f, 'unknown_command'));
  });

  const peer = version === '5.2' ? '5.2' : '5.3';

  it('revoke replies: one id, a list, terminate of ids not running here', () => {
    const id1 = f.requests.revoke.body.arguments as { task_id: string };
    expect(revokeReply([id1.task_id], peer)).toEqual(replyOf(f, 'revoke_one'));
    const id2 = `${id1.task_id.replace(/-1$/, '')}-2`;
    expect(revokeReply(taskIdsOf([id2]), peer)).toEqual(replyOf(f, 'revoke_list'));
    expect(terminateReply([])).toEqual(replyOf(f, 'revoke_terminate_unknown'));
  });

  it('revoke_by_stamped_headers without terminate (5.2 has no such command)', () => {
    const expected = version === '5.2' ? unknownCommandReply('revoke_by_stamped_headers') : { ok: `headers ${stampedHeadersRepr(stampedHeadersOf({ mystamp: ['s1'] }))} flagged as revoked, but not terminated` };
    expect(expected).toEqual(replyOf(f, 'revoke_by_stamped_headers'));
  });

  it('request info (active, reserved, query_task) has the keys and values of Request.info()', () => {
    const active = (replyOf(f, 'active') as Record<string, unknown>[])[0];
    expect(requestInfo(snapshotLike(active))).toEqual(active);
    const reserved = (replyOf(f, 'reserved') as Record<string, unknown>[])[0];
    expect(requestInfo(snapshotLike(reserved))).toEqual(reserved);
    // safe: args / kwargs as repr strings
    const safe = (replyOf(f, 'active_safe') as Record<string, unknown>[])[0];
    expect(requestInfo(snapshotLike(active), true)).toEqual(safe);
  });

  it('scheduled entries: {eta, priority, request}, eta as Python isoformat', () => {
    const entry = (replyOf(f, 'scheduled') as Record<string, unknown>[])[0] as { eta: string; priority: number; request: Record<string, unknown> };
    const etaMs = Date.parse(entry.eta);
    const ours = scheduledEntry({ ...snapshotLike(entry.request), etaMs });
    expect(ours.priority).toBe(entry.priority);
    expect(ours.request).toEqual(entry.request);
    // Python prints microseconds; we have milliseconds: the same instant and form to the ms
    expect(ours.eta?.slice(0, 23)).toBe(entry.eta.slice(0, 23));
    expect(ours.eta).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$/);
  });

  it('registered lists sorted names with the set attributes', () => {
    const tasks = [
      { name: 'capture.sleepy', attributes: { rate_limit: null, exchange: null, routing_key: null } },
      { name: 'capture.add', attributes: { rate_limit: '10/s' } },
      { name: 'celery.chord_unlock', attributes: {} },
    ];
    expect(registeredReply(tasks)).toEqual(replyOf(f, 'registered'));
    // taskinfoitems ['rate_limit', 'queue']: queue is None on both tasks
    expect(registeredReply(tasks, ['rate_limit', 'queue'])).toEqual(replyOf(f, 'registered_items'));
  });

  it('active_queues: kombu Queue.as_dict of a plain queue', () => {
    const queues = replyOf(f, 'active_queues') as Record<string, unknown>[];
    expect(queueAsDict(plainQueue(f.queue))).toEqual(queues[0]);
  });

  it('stats has every key a Celery worker gives (and rusage its fields)', () => {
    const stats = replyOf(f, 'stats') as Record<string, unknown>;
    const rusage = rusageOf(process.resourceUsage());
    expect(Object.keys(rusage).sort()).toEqual(Object.keys(stats.rusage as object).sort());
    expect(typeof stats.clock).toBe('string');
  });

  it('simple control replies are the strings Celery sends', () => {
    expect(replyOf(f, 'ping')).toEqual({ ok: 'pong' });
    expect(replyOf(f, 'rate_limit_ok')).toEqual({ ok: 'new rate limit set successfully' });
    expect(replyOf(f, 'rate_limit_off')).toEqual({ ok: 'rate limit disabled successfully' });
    expect(replyOf(f, 'rate_limit_unknown')).toEqual({ error: 'unknown task' });
    expect(replyOf(f, 'time_limit_ok')).toEqual({ ok: 'time limits set successfully' });
    expect(replyOf(f, 'heartbeat')).toBeNull();
    expect(f.replies.shutdown).toEqual([]);
  });
});

describe('control requests: addressing, expiry, bad messages', () => {
  const base = { destination: null, pattern: null, matcher: null };
  it('addresses by destination, glob and pcre as kombu', () => {
    expect(isAddressedTo(base, 'a@h')).toBe(true);
    expect(isAddressedTo({ ...base, destination: [] }, 'a@h')).toBe(true);
    expect(isAddressedTo({ ...base, destination: ['b@h'] }, 'a@h')).toBe(false);
    expect(isAddressedTo({ ...base, destination: ['b@h', 'a@h'] }, 'a@h')).toBe(true);
    expect(isAddressedTo({ ...base, pattern: 'nestjs-*@*', matcher: 'glob' }, 'nestjs-12@h')).toBe(true);
    expect(isAddressedTo({ ...base, pattern: 'celery@*', matcher: 'glob' }, 'nestjs-12@h')).toBe(false);
    // re.match: anchored at the start only
    expect(isAddressedTo({ ...base, pattern: 'nestjs-\\d+', matcher: 'pcre' }, 'nestjs-12@h')).toBe(true);
    expect(isAddressedTo({ ...base, pattern: '\\d+', matcher: 'pcre' }, 'nestjs-12@h')).toBe(false);
    // a pattern without a matcher addresses everyone (kombu needs both)
    expect(isAddressedTo({ ...base, pattern: 'zzz' }, 'a@h')).toBe(true);
    expect(() => isAddressedTo({ ...base, pattern: 'x', matcher: 'regex' }, 'a@h')).toThrow(/no matcher installed for "regex"/);
  });

  it('a reply is expired after headers.expires; casts never are', () => {
    const call = { replyTo: { exchange: 'reply.celery.pidbox', routingKey: 'x' }, expires: 1000 };
    expect(replyExpired(call, 999)).toBe(false);
    expect(replyExpired(call, 1001)).toBe(true);
    expect(replyExpired({ ...call, expires: 0 }, 1001)).toBe(false);
    expect(replyExpired({ replyTo: null, expires: 1000 }, 1001)).toBe(false);
  });

  it('names what is wrong in a malformed request', () => {
    expect(() => parseControlRequest([], {})).toThrow(InvalidControlMessageError);
    expect(() => parseControlRequest('ping', {})).toThrow(/body must be a JSON object, got string/);
    expect(() => parseControlRequest({}, {})).toThrow(/"method" must be a non-empty string/);
    expect(() => parseControlRequest({ method: 'ping', arguments: [1] }, {})).toThrow(/"arguments" of ping must be an object/);
    expect(() => parseControlRequest({ method: 'ping', destination: 'a@h' }, {})).toThrow(/"destination" must be a list of node names/);
    expect(() => parseControlRequest({ method: 'ping', reply_to: { exchange: 1 } }, {})).toThrow(/"reply_to" must be/);
    expect(() => taskIdsOf([1])).toThrow(/task_id must be a task id or a list/);
    expect(parseControlRequest({ method: 'ping' }, undefined)).toMatchObject({ arguments: {}, clock: 0, expires: 0 });
  });

  it('formats an ETA as Python isoformat', () => {
    expect(isoformatUtc(Date.UTC(2026, 11, 2, 11, 40, 17, 179))).toBe('2026-12-02T11:40:17.179000+00:00');
    expect(isoformatUtc(Date.UTC(2026, 11, 2, 11, 40, 17, 0))).toBe('2026-12-02T11:40:17+00:00');
  });
});
