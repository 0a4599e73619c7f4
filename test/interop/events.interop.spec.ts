import { Test, TestingModule } from '@nestjs/testing';
import type { ConsumeMessage } from 'amqplib';
import { ChildProcess, execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CeleryModule, Producer } from '../../lib';
import { EventTasks } from '../support/event-tasks';
import { AMQP_URL, eventually, RawAmqp, realOptions, removeQueueAndTable, uniqueName } from '../support/real-services';
import { ensurePythonCelery, ensurePythonCelery52, PYTHON_DIR, VENV, VENV_52 } from './support/python-celery';

const run = promisify(execFile);

/** The tasks of test/fixtures/celery-events.py, on the NestJS side. */

type Body = Record<string, unknown>;

/** A queue bound to celeryev with '#', as a monitor binds one: every event message, decoded. */
async function monitorQueue(): Promise<{ amqp: RawAmqp; messages: { routingKey: string; headers: Record<string, unknown>; deliveryMode: unknown; bodies: Body[] }[] }> {
  const amqp = await RawAmqp.open();
  const name = `celeryev.${uniqueName('golden')}`;
  await amqp.channel.assertExchange('celeryev', 'topic', { durable: true });
  await amqp.channel.assertQueue(name, { exclusive: true, autoDelete: true, durable: false });
  await amqp.channel.bindQueue(name, 'celeryev', '#');
  const messages: { routingKey: string; headers: Record<string, unknown>; deliveryMode: unknown; bodies: Body[] }[] = [];
  await amqp.channel.consume(
    name,
    (msg: ConsumeMessage | null) => {
      if (!msg) return;
      const body = JSON.parse(msg.content.toString('utf8')) as Body | Body[];
      messages.push({ routingKey: msg.fields.routingKey, headers: msg.properties.headers ?? {}, deliveryMode: msg.properties.deliveryMode, bodies: Array.isArray(body) ? body : [body] });
    },
    { noAck: true },
  );
  return { amqp, messages };
}

/** JSON type of each key, as in the unit golden test. */
function shape(event: Body): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of Object.keys(event).sort()) {
    const v = event[key];
    out[key] = v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
  }
  return out;
}

/** `events_monitor.py`: Python's Receiver + State, run until `node` is offline and every id is done. */
class PythonMonitor {
  private out = '';
  private readonly exited: Promise<number | null>;
  private constructor(private readonly child: ChildProcess) {
    child.stdout?.on('data', (c: Buffer) => (this.out += c.toString()));
    child.stderr?.on('data', (c: Buffer) => (this.out += c.toString()));
    this.exited = new Promise((resolve) => child.once('exit', resolve));
  }

  static async start(venv: string, node: string, ids: string[]): Promise<PythonMonitor> {
    const child = spawn(join(venv, 'bin', 'python'), ['events_monitor.py', node, '60', ...ids], {
      cwd: PYTHON_DIR,
      env: { ...process.env, CELERY_BROKER_URL: AMQP_URL, PYTHONDONTWRITEBYTECODE: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const monitor = new PythonMonitor(child);
    await eventually(async () => monitor.out.includes('READY') || child.exitCode !== null, 30000);
    if (!monitor.out.includes('READY')) throw new Error(`monitor did not start:\n${monitor.out}`);
    return monitor;
  }

  async result(): Promise<Record<string, any>> {
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 90000);
    await this.exited;
    clearTimeout(timer);
    const last = this.out.trim().split('\n').pop() as string;
    try {
      return JSON.parse(last) as Record<string, any>;
    } catch {
      throw new Error(`monitor output:\n${this.out}`);
    }
  }
}

describe('events interop with real Python Celery', () => {
  const queue = uniqueName('io_ev');
  const table = uniqueName('io_ev');

  beforeAll(() => {
    ensurePythonCelery();
    ensurePythonCelery52();
  });

  afterAll(async () => {
    await removeQueueAndTable(queue, table);
  });

  async function startWorker(node: string): Promise<TestingModule> {
    const moduleRef = await Test.createTestingModule({
      imports: [CeleryModule.forRoot(realOptions(queue, table, { worker: { hostname: node, sendTaskEvents: true } }))],
      providers: [EventTasks],
    }).compile();
    await moduleRef.init();
    return moduleRef;
  }

  it('golden, live: a Celery 5.7 worker -E and our worker send the same keys with the same types for each event', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'celery-events-'));
    const file = join(dir, 'python.json');
    await run(join(VENV, 'bin', 'python'), [join(__dirname, '..', 'fixtures', 'celery-events.py'), file], { env: { ...process.env, CELERY_BROKER_URL: AMQP_URL }, timeout: 120000 });
    const python = JSON.parse(readFileSync(file, 'utf8')) as { node: string; messages: { routing_key: string; body: Body | Body[] }[] };
    const theirs = python.messages.flatMap((m) => (Array.isArray(m.body) ? m.body : [m.body]));

    const node = `${uniqueName('golden')}@nestjs`;
    const { amqp, messages } = await monitorQueue();
    const app = await startWorker(node);
    try {
      const producer = app.get(Producer);
      const sent = [
        await producer.sendTask('ev.add', { args: [2, 3] }),
        await producer.sendTask('ev.echo', { args: ['hi'] }),
        await producer.sendTask('ev.fail'),
        await producer.sendTask('ev.retry_once'),
        await producer.sendTask('ev.add', { args: [1, 1], expires: new Date(Date.now() - 1000) }),
      ];
      for (const r of sent) await r.get({ timeout: 20000, propagate: false });
      await eventually(async () => messages.some((m) => m.headers.hostname === node && m.bodies.some((b) => b.type === 'worker-heartbeat')), 10000);
    } finally {
      await app.close();
    }
    await eventually(async () => messages.some((m) => m.bodies.some((b) => b.type === 'worker-offline' && b.hostname === node)));
    await amqp.close();
    const ours = messages.filter((m) => m.headers.hostname === node).flatMap((m) => m.bodies);
    const compared: string[] = [];
    for (const type of ['worker-online', 'worker-heartbeat', 'worker-offline', 'task-received', 'task-started', 'task-succeeded', 'task-failed', 'task-retried', 'task-revoked']) {
      const a = ours.find((b) => b.type === type);
      const b = theirs.find((e) => e.type === type && e.hostname === python.node);
      expect([type, a && shape(a)]).toEqual([type, b && shape(b)]);
      compared.push(type);
    }
    expect(compared).toHaveLength(9);
    // the same reprs for the same values
    const result = (type: string, field: string, list: Body[]) => list.filter((e) => e.type === type).map((e) => e[field]);
    expect(result('task-succeeded', 'result', ours).sort()).toEqual(result('task-succeeded', 'result', theirs.filter((e) => e.hostname === python.node)).sort());
    expect(result('task-failed', 'exception', ours)).toEqual(["ValueError('boom')"]);
    expect(result('task-retried', 'exception', ours)).toEqual(result('task-retried', 'exception', theirs));
  }, 240000);

  it("Python's Receiver and State (Celery 5.7 and 5.2.6) see our worker alive, its tasks SUCCESS / FAILURE with result and runtime, then offline; celery events --dump shows them", async () => {
    const node = `${uniqueName('monitored')}@nestjs`;
    const ok = randomUUID();
    const bad = randomUUID();
    const monitors = [await PythonMonitor.start(VENV, node, [ok, bad]), await PythonMonitor.start(VENV_52, node, [ok, bad])];
    const dump = spawn(join(VENV, 'bin', 'celery'), ['-b', AMQP_URL, 'events', '--dump'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let dumped = '';
    dump.stdout.on('data', (c: Buffer) => (dumped += c.toString()));
    dump.stderr.on('data', (c: Buffer) => (dumped += c.toString()));
    try {
      await eventually(async () => dumped.includes('starting capture'), 30000);
      await new Promise((resolve) => setTimeout(resolve, 1500)); // its queue is bound just after it says so
      const app = await startWorker(node);
      try {
        const producer = app.get(Producer);
        await expect((await producer.sendTask('ev.add', { args: [2, 3], taskId: ok })).get({ timeout: 20000 })).resolves.toBe(5);
        await expect((await producer.sendTask('ev.fail', { taskId: bad })).get({ timeout: 20000 })).rejects.toThrow();
        await new Promise((resolve) => setTimeout(resolve, 2500)); // a heartbeat or two
      } finally {
        await app.close();
      }
      const [v57, v52] = await Promise.all(monitors.map((m) => m.result()));
      for (const seen of [v57, v52]) {
        expect(seen.done).toBe(true);
        expect(seen.while_running).toMatchObject({ alive: true });
        expect(seen.worker).toMatchObject({ hostname: node, alive: false, sw_ident: 'nestjs-celery', sw_sys: 'Linux', freq: 2, pid: process.pid });
        expect(seen.tasks[ok]).toMatchObject({ state: 'SUCCESS', name: 'ev.add', args: '[2, 3]', result: '5', worker: node });
        expect(typeof seen.tasks[ok].runtime).toBe('number');
        expect(seen.tasks[bad]).toMatchObject({ state: 'FAILURE', name: 'ev.fail', exception: "ValueError('boom')", worker: node });
        expect(seen.types[0]).toBe('worker-online');
        expect(seen.types.at(-1)).toBe('worker-offline');
      }
      expect(v57.celery).toMatch(/^5\.(7|[89]|\d\d)/);
      expect(v52.celery).toBe('5.2.6');
      await eventually(async () => dumped.includes(`task succeeded: ev.add(${ok})`), 10000);
      // fields follow in key order: clock=..., local_received=..., pid=..., result=5, runtime=...
      expect(dumped).toMatch(new RegExp(`${node.replace(/[.]/g, '\\.')} \\[[^\\]]+\\] task succeeded: ev\\.add\\(${ok}\\) args=\\[2, 3\\] kwargs=\\{\\} .*result=5, runtime=`));
      expect(dumped).toContain(`task failed: ev.fail(${bad}) args=[] kwargs={}`);
      expect(dumped).toContain("exception=ValueError('boom')");
      expect(dumped).toContain(`${node} [`);
      expect(dumped).toMatch(/worker online|heartbeat/);
    } finally {
      dump.kill('SIGKILL');
    }
  }, 180000);
});
