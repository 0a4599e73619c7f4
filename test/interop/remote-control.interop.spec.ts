import { Test, TestingModule } from '@nestjs/testing';
import { setTimeout as sleep } from 'node:timers/promises';
import { CeleryModule, Producer } from '../../lib';
import { ControlProbeTasks, probeRuns } from '../support/control-probe-tasks';
import { eventually, removeQueueAndTable, uniqueName } from '../support/real-services';
import { celeryCli, ensurePythonCelery, ensurePythonCelery52, interopCeleryconfig, PythonEnv, PythonWorker, VENV, VENV_52 } from './support/python-celery';

/**
 * Python's `celery inspect` / `celery control` (Celery 5.7 and 5.2.6 as the requester) on a NestJS
 * worker, with real Python workers of both versions answering the same broadcast.
 */
describe('remote control from Python Celery on a NestJS worker', () => {
  const table = uniqueName('rc_interop');
  const jsQueue = uniqueName('rc_js');
  const env: PythonEnv = { pyQueue: uniqueName('rc_py'), table };
  const env52: PythonEnv = { pyQueue: uniqueName('rc_py52'), table, venv: VENV_52 };
  const nest = `${uniqueName('nestjs-rc')}@localhost`;
  const py = `py-interop-${env.pyQueue}@localhost`;
  const py52 = `py-interop-${env52.pyQueue}@localhost`;
  let app: TestingModule;
  let producer: Producer;
  let worker: PythonWorker | undefined;
  let worker52: PythonWorker | undefined;

  /**
   * `celery -A tasks <command> --json -t <s> -d <nodes>` and its answer by node: `inspect` prints
   * one JSON object `{node: reply}`, `control` a list of them.
   */
  async function cli(requester: PythonEnv, command: string[], nodes: string[], timeoutS = 3): Promise<Record<string, unknown>> {
    const out = await celeryCli(requester, [...command, '--json', '-t', String(timeoutS), '-d', nodes.join(',')]);
    if (out.code !== 0) throw new Error(`celery ${command.join(' ')} exited ${out.code}:\n${out.stdout}\n${out.stderr}`);
    const text = out.stdout.trim();
    const parsed = JSON.parse(text.slice(text.search(/[[{]/))) as Record<string, unknown> | Record<string, unknown>[];
    return Array.isArray(parsed) ? Object.assign({}, ...parsed) : parsed;
  }

  beforeAll(async () => {
    ensurePythonCelery();
    ensurePythonCelery52();
    app = await Test.createTestingModule({
      imports: [CeleryModule.forRoot({ ...interopCeleryconfig(table, jsQueue), resultPollIntervalMs: 20, worker: { hostname: nest, concurrency: 1 } })],
      providers: [ControlProbeTasks],
    }).compile();
    [worker, worker52] = await Promise.all([PythonWorker.start(env), PythonWorker.start(env52), app.init()]);
    producer = app.get(Producer);
  }, 240000);

  afterAll(async () => {
    await Promise.all([worker?.stop('SIGKILL'), worker52?.stop('SIGKILL')]);
    await app?.close();
    await removeQueueAndTable([env.pyQueue, env52.pyQueue, jsQueue], table);
  });

  describe.each([
    ['Celery 5.7', { ...env, venv: VENV }],
    ['Celery 5.2.6', env52],
  ])('%s as the requester', (_label, requester) => {
    it('inspect ping: the NestJS node and both Python nodes answer', async () => {
      expect(await cli(requester, ['inspect', 'ping'], [nest, py, py52])).toEqual({ [nest]: { ok: 'pong' }, [py]: { ok: 'pong' }, [py52]: { ok: 'pong' } });
    });

    it('inspect registered lists our tasks as Python lists its own', async () => {
      const replies = await cli(requester, ['inspect', 'registered'], [nest, py]);
      expect(replies[nest]).toEqual(['probe.add [rate_limit=50/s]', 'probe.wait']);
      expect(replies[py]).toEqual(expect.arrayContaining(['tasks.add', 'tasks.sortWords']));
    });

    it('inspect stats: our reply has the keys of a Python worker\'s', async () => {
      const replies = (await cli(requester, ['inspect', 'stats'], [nest, py])) as Record<string, Record<string, unknown>>;
      const pyKeys = Object.keys(replies[py]).sort();
      expect(Object.keys(replies[nest]).sort()).toEqual(pyKeys);
      expect(Object.keys(replies[nest].rusage as object).sort()).toEqual(Object.keys(replies[py].rusage as object).sort());
      expect(replies[nest]).toMatchObject({ pid: process.pid, pool: { 'max-concurrency': 1 } });
    });

    it('inspect active shows a running NestJS task; control revoke of a queued one: not run, REVOKED', async () => {
      const long = await producer.sendTask('probe.wait', { args: [6000] });
      await eventually(async () => probeRuns.includes(long.id));
      const active = (await cli(requester, ['inspect', 'active'], [nest]))[nest] as { id: string; name: string; args: unknown[]; hostname: string }[];
      expect(active).toEqual([expect.objectContaining({ id: long.id, name: 'probe.wait', args: [6000], hostname: nest })]);
      // queued behind it (concurrency 1): revoked before it runs
      const queued = await producer.sendTask('probe.add', { args: [2, 2] });
      const revoked = await cli(requester, ['control', 'revoke', queued.id], [nest]);
      expect(revoked[nest]).toEqual({ ok: expect.stringContaining(queued.id) });
      expect(((await cli(requester, ['inspect', 'revoked'], [nest]))[nest] as string[])).toContain(queued.id);
      // then terminate the running one, as `celery control terminate SIGTERM <id>`
      const terminated = await cli(requester, ['control', 'terminate', 'SIGTERM', long.id], [nest]);
      expect(terminated[nest]).toEqual({ ok: `terminate: ${long.id}` });
      await eventually(async () => (await long.state()) === 'REVOKED');
      await eventually(async () => (await queued.state()) === 'REVOKED');
      await sleep(300);
      expect(probeRuns).not.toContain(queued.id);
      expect((await queued.info()).result).toMatchObject({ exc_type: 'TaskRevokedError', exc_message: ['revoked'] });
      expect((await long.info()).result).toMatchObject({ exc_type: 'TaskRevokedError', exc_message: ['terminated'] });
    }, 60000);

    it('control rate_limit on the NestJS node', async () => {
      try {
        const replies = await cli(requester, ['control', 'rate_limit', 'probe.add', '7/m'], [nest]);
        expect(replies[nest]).toEqual({ ok: 'new rate limit set successfully' });
        expect((await cli(requester, ['inspect', 'registered'], [nest]))[nest]).toEqual(['probe.add [rate_limit=7/m]', 'probe.wait']);
      } finally {
        await cli(requester, ['control', 'rate_limit', 'probe.add', '50/s'], [nest]);
      }
    });
  });

  it('mingle: a Python 5.7 worker starting with mingle gets the ids revoked on the NestJS node (our hello reply)', async () => {
    const id = uniqueName('revoked-before-mingle');
    expect((await cli(env, ['control', 'revoke', id], [nest]))[nest]).toEqual({ ok: `tasks {'${id}'} flagged as revoked` });
    const mingleEnv: PythonEnv = { pyQueue: uniqueName('rc_mingle'), table };
    const mingler = await PythonWorker.start(mingleEnv, { mingle: true });
    try {
      const node = `py-interop-${mingleEnv.pyQueue}@localhost`;
      expect((await cli(env, ['inspect', 'revoked'], [node]))[node]).toContain(id);
      expect(mingler.log()).toMatch(/mingle: sync with \d+ nodes/);
      expect(mingler.log()).not.toMatch(/mingle: sync with .* failed/);
    } finally {
      await mingler.stop('SIGKILL');
      await removeQueueAndTable([mingleEnv.pyQueue], uniqueName('unused'));
    }
  }, 120000);
});
