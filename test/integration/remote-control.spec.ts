import { Logger } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import { setTimeout as sleep } from 'node:timers/promises';
import { CeleryModule, CeleryWorker, Producer } from '../../lib';
import { ControlProbeTasks, probeRuns } from '../support/control-probe-tasks';
import { PidboxClient } from '../support/pidbox-client';
import { closeConnections, rabbitmqctl } from '../support/rabbitmq-admin';
import { eventually, realOptions, removeQueueAndTable, uniqueName } from '../support/real-services';

/**
 * Remote control on the real RabbitMQ: requests published exactly as Python's app.control
 * publishes them (test/support/pidbox-client.ts), replies read off the reply exchange, results
 * off Cassandra.
 */
describe('remote control (pidbox) on RabbitMQ', () => {
  const queue = uniqueName('it_pidbox');
  const table = uniqueName('it_pidbox');
  const node = `${uniqueName('nest')}@it-host`;
  let app: TestingModule;
  let client: PidboxClient;

  async function startApp(hostname: string): Promise<TestingModule> {
    const moduleRef = await Test.createTestingModule({
      imports: [CeleryModule.forRoot(realOptions(queue, table, { worker: { hostname, concurrency: 1, shutdownTimeoutMs: 1000 } }))],
      providers: [ControlProbeTasks],
    }).compile();
    await moduleRef.init();
    return moduleRef;
  }

  beforeAll(async () => {
    app = await startApp(node);
    client = await PidboxClient.open();
  });

  afterAll(async () => {
    await client?.close();
    await app?.close();
    await removeQueueAndTable(queue, table);
  });

  it('declares <node>.celery.pidbox as Celery 5.7 does, bound to the celery.pidbox fanout exchange', async () => {
    const out = await rabbitmqctl('list_queues', 'name', 'durable', 'auto_delete', 'exclusive', 'arguments', '--formatter', 'json');
    const q = (JSON.parse(out) as { name: string; durable: boolean; auto_delete: boolean; exclusive: boolean | string; arguments: [string, string, unknown][] }[]).find((x) => x.name === `${node}.celery.pidbox`);
    expect(q).toMatchObject({ durable: false, auto_delete: true, exclusive: true });
    expect(Object.fromEntries((q?.arguments ?? []).map(([k, , v]) => [k, v]))).toEqual({ 'x-expires': 10000, 'x-message-ttl': 300000 });
    const bindings = await rabbitmqctl('list_bindings', 'source_name', 'destination_name', '--formatter', 'json');
    expect(JSON.parse(bindings)).toContainEqual({ source_name: 'celery.pidbox', destination_name: `${node}.celery.pidbox` });
  });

  it('answers ping to the requester\'s reply queue, with its ticket and a clock', async () => {
    const replies = await client.call('ping', {}, [node], 800);
    expect(replies).toHaveLength(1);
    expect(replies[0].body).toEqual({ [node]: { ok: 'pong' } });
    expect(replies[0].exchange).toBe('reply.celery.pidbox');
    expect(replies[0].headers).toEqual({ ticket: expect.any(String), clock: expect.any(Number) });
    // a broadcast with no destination reaches it too
    const all = await client.call('ping', {}, null, 800);
    expect(all.map((r) => r.body)).toContainEqual({ [node]: { ok: 'pong' } });
  });

  it('drops malformed messages and keeps answering', async () => {
    client.publishRaw(Buffer.from('{"method": '));
    client.publishRaw(Buffer.from('[]'));
    client.publishRaw(Buffer.from('\x00\x01'), 'application/x-python-serialize');
    expect(await client.ask(node, 'ping')).toEqual({ ok: 'pong' });
    expect(await client.ask(node, 'nope')).toEqual({ error: "KeyError('nope')" });
  });

  it('inspect active and registered while a task runs; revoke (cast) of a queued task: not run, REVOKED in Cassandra', async () => {
    const producer = app.get(Producer);
    const long = await producer.sendTask('probe.wait', { args: [4000] });
    await eventually(async () => probeRuns.includes(long.id));
    const active = (await client.ask(node, 'active', {}, 300)) as { id: string; name: string; args: unknown[] }[];
    expect(active).toEqual([expect.objectContaining({ id: long.id, name: 'probe.wait', args: [4000], hostname: node, delivery_info: expect.objectContaining({ routing_key: queue }) })]);
    expect(await client.ask(node, 'registered', {}, 300)).toEqual(['probe.add [rate_limit=50/s]', 'probe.wait']);
    // queued behind the running task (concurrency 1), then revoked as Python's control.revoke does (a cast)
    const queued = await producer.sendTask('probe.add', { args: [1, 2] });
    await eventually(async () => ((await client.ask(node, 'reserved', {}, 200)) as unknown[]).length === 1);
    client.cast('revoke', { task_id: queued.id, terminate: false, signal: 'SIGTERM' });
    await eventually(async () => ((await client.ask(node, 'revoked', {}, 300)) as string[]).includes(queued.id));
    expect(await long.get({ timeout: 8000 })).toBe(4000);
    await eventually(async () => (await queued.state()) === 'REVOKED');
    await sleep(200);
    expect(probeRuns).not.toContain(queued.id);
    await expect(queued.get({ timeout: 1000 })).rejects.toThrow(/TaskRevokedError|revoked/);
  });

  it('revoke with terminate fires the running task\'s AbortSignal: REVOKED terminated', async () => {
    const producer = app.get(Producer);
    const long = await producer.sendTask('probe.wait', { args: [20000] });
    await eventually(async () => probeRuns.includes(long.id));
    expect(await client.ask(node, 'revoke', { task_id: [long.id], terminate: true, signal: 'SIGTERM' })).toEqual({ ok: `terminate: ${long.id}` });
    await eventually(async () => (await long.state()) === 'REVOKED');
    expect((await long.info()).result).toMatchObject({ exc_type: 'TaskRevokedError', exc_message: ['terminated'] });
  });

  it('a second worker with the same node name runs without remote control (the queue is exclusive) and says why', async () => {
    const errors: string[] = [];
    const spy = jest.spyOn(Logger.prototype, 'error').mockImplementation((message: unknown) => void errors.push(String(message)));
    let twin: TestingModule | undefined;
    try {
      twin = await startApp(node);
      expect(errors.join('\n')).toMatch(new RegExp(`A node named ${node.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is already using its remote-control queue`));
      expect(twin.get(CeleryWorker)).toBeDefined();
    } finally {
      spy.mockRestore();
      await twin?.close();
    }
    // the first one still answers, once
    expect((await client.call('ping', {}, [node], 800)).length).toBe(1);
  });

  it('answers again after the connection is lost and recovered', async () => {
    await closeConnections('pidbox recovery test');
    await client.close();
    client = await PidboxClient.open();
    await eventually(async () => (await client.call('ping', {}, [node], 400)).length === 1, 20000);
  });
});
