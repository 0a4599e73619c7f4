import { mkdtempSync, readFileSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CeleryControl } from '../../../lib/control/celery-control';
import type { ControlTransport, RawControlReply } from '../../../lib/control/control-transport';
import type { EncodedControlRequest } from '../../../lib/protocol/control-message';
import { answerHello, mingle, revokedIdsOf } from '../../../lib/worker/mingle';
import { FileRevokedStore, PersistentRevokedSet } from '../../../lib/worker/revoked-persistence';
import { LimitedSet, REVOKE_EXPIRES_MS, REVOKES_MAX } from '../../../lib/worker/control/limited-set';

describe('FileRevokedStore (Celery --statedb)', () => {
  const dir = () => mkdtempSync(join(tmpdir(), 'revoked-'));

  it('a revoke persisted before a restart is flagged again after it', async () => {
    const path = join(dir(), 'sub', 'worker.revoked');
    const before = new PersistentRevokedSet(new LimitedSet(), new FileRevokedStore(path));
    before.add('t-1');
    before.add('t-2', Date.now() + 60_000);
    await before.flush();
    // "restart": a new set and store on the same file
    const after = new PersistentRevokedSet(new LimitedSet(), new FileRevokedStore(path));
    expect(after.has('t-1')).toBe(false);
    expect(await after.restore()).toBe(2);
    expect(after.has('t-1')).toBe(true);
    expect(after.has('t-2')).toBe(true);
    expect(after.has('t-3')).toBe(false);
  });

  it('expired ids are not restored; a line cut short by a crash is skipped; a repeated id keeps its latest expiry', async () => {
    const path = join(dir(), 'w.revoked');
    const now = Date.now();
    writeFileSync(path, [JSON.stringify({ id: 'old', expires: now - 1 }), JSON.stringify({ id: 'a', expires: now + 1000 }), JSON.stringify({ id: 'a', expires: now + 5000 })].join('\n') + '\n');
    appendFileSync(path, '{"id": "cut');
    const entries = await new FileRevokedStore(path).load(now);
    expect(entries).toEqual([{ id: 'a', expiresAt: now + 5000 }]);
  });

  it('rewrites the file with the live ids when most lines are dead', async () => {
    const path = join(dir(), 'w.revoked');
    const now = Date.now();
    const dead = Array.from({ length: 300 }, (_, i) => JSON.stringify({ id: `d${i}`, expires: now - 10 }));
    writeFileSync(path, [...dead, JSON.stringify({ id: 'live', expires: now + 1000 })].join('\n') + '\n');
    await new FileRevokedStore(path).load(now);
    expect(readFileSync(path, 'utf8').trim().split('\n')).toEqual([JSON.stringify({ id: 'live', expires: now + 1000 })]);
  });

  it('a write that fails is logged and the id still counts in this run', async () => {
    const file = join(dir(), 'a-file');
    writeFileSync(file, '');
    // under a regular file: every write fails with ENOTDIR
    const set = new PersistentRevokedSet(new LimitedSet(), new FileRevokedStore(join(file, 'x')));
    set.add('t-9');
    await set.flush();
    expect(set.has('t-9')).toBe(true);
  });
});

class ScriptedTransport implements ControlTransport {
  readonly oid = 'oid-m';
  readonly sent: Record<string, unknown>[] = [];
  constructor(
    private readonly onReply: (r: RawControlReply) => void,
    private readonly nodes: Record<string, unknown>,
  ) {}
  async ready(): Promise<void> {}
  async publish(request: EncodedControlRequest): Promise<void> {
    const body = JSON.parse(request.body.toString('utf8')) as Record<string, unknown>;
    this.sent.push(body);
    for (const [node, reply] of Object.entries(this.nodes)) {
      setImmediate(() => this.onReply({ headers: { ticket: body.ticket, clock: 3 }, contentType: 'application/json', body: Buffer.from(JSON.stringify({ [node]: reply })) }));
    }
  }
  async close(): Promise<void> {}
}

describe('mingle (Celery hello at start)', () => {
  it('sends our ids, merges the ids every other node answers with (5.7 list and 5.2.6 mapping), skips our own reply', async () => {
    let transport!: ScriptedTransport;
    const control = new CeleryControl(null, {
      transport: (onReply) =>
        (transport = new ScriptedTransport(onReply, {
          'celery@me': { revoked: ['mine-echo'], clock: 99 },
          'celery@py57': { revoked: ['a', 'b'], clock: 10 },
          'celery@py52': { revoked: { c: [123.4, 1, 'c'], a: [1.0, 2, 'a'] }, clock: 12 },
        })),
    });
    let clock = 0;
    const set = new LimitedSet(REVOKES_MAX, REVOKE_EXPIRES_MS, () => clock);
    set.add('ours');
    const result = await mingle(control, 'celery@me', set, { timeout: 200 });
    expect(transport.sent[0]).toMatchObject({ method: 'hello', arguments: { from_node: 'celery@me', revoked: ['ours'] } });
    expect(result.nodes.sort()).toEqual(['celery@py52', 'celery@py57']);
    expect(result.added).toBe(3);
    expect(result.clock).toBe(12);
    expect(set.ids().sort()).toEqual(['a', 'b', 'c', 'ours']);
    expect(set.has('mine-echo')).toBe(false);
    // stamped with the local clock: REVOKE_EXPIRES from now
    clock = REVOKE_EXPIRES_MS - 5000;
    set.purge();
    expect(set.has('c')).toBe(true);
    clock = REVOKE_EXPIRES_MS + 5000;
    set.purge();
    expect(set.has('c')).toBe(false);
  });

  it('alone on the broker: nothing merged', async () => {
    const control = new CeleryControl(null, { transport: (onReply) => new ScriptedTransport(onReply, {}) });
    expect(await mingle(control, 'celery@me', new LimitedSet(), { timeout: 50 })).toEqual({ nodes: [], added: 0, clock: null });
  });

  it('a broker error does not stop the start: logged, nothing merged', async () => {
    const control = new CeleryControl(null, {
      transport: () => ({ oid: 'x', ready: async () => Promise.reject(new Error('down')), publish: async () => undefined, close: async () => undefined }),
    });
    expect(await mingle(control, 'celery@me', new LimitedSet())).toEqual({ nodes: [], added: 0, clock: null });
  });

  it('the worker side answers another node\'s hello with its ids and merges the ids it got; its own hello gets no answer', () => {
    const set = new LimitedSet();
    set.add('x');
    let clock = 5;
    const self = { hostname: 'celery@me', revoked: set, forwardClock: () => ++clock };
    expect(answerHello({ from_node: 'celery@other', revoked: ['y'] }, self)).toEqual({ revoked: ['x', 'y'], clock: 6 });
    expect(answerHello({ from_node: 'celery@me', revoked: ['z'] }, self)).toBeNull();
    expect(set.has('z')).toBe(false);
  });

  it('revokedIdsOf reads both wire forms and ignores junk', () => {
    expect(revokedIdsOf(['a', 1, '', 'b'])).toEqual(['a', 'b']);
    expect(revokedIdsOf({ a: 1.5, b: [2.5, 1, 'b'] })).toEqual(['a', 'b']);
    expect(revokedIdsOf(null)).toEqual([]);
    expect(revokedIdsOf('a')).toEqual([]);
  });
});
