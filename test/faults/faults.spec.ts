import {
  cassandraPid,
  cassandraSyncs,
  dropWorkerRole,
  ensureCassandraSyncs,
  misfitReplies,
  RABBITMQ_PID_FILE,
  rabbitmqctl,
  redeliveredIds,
  sampleUntilStopped,
  Scenario,
  SentTask,
  services,
  sleep,
  startCassandraOnItsData,
  stopCassandra,
  unacknowledged,
  useWorkerRole,
  watchBrokerPort,
  WorkerProcess,
  workerCassandraPassword,
} from './fault-harness';
import { createLoadTables, startFillerLoad } from '../support/misroute-load';
import { closeConnections, withConsumerTimeout } from '../support/rabbitmq-admin';
import { RawAmqp, rawCassandra } from '../support/real-services';

/**
 * The fault suite: the sample worker as a separate process, the walkthrough's task, a fault
 * in mid-run, and the tally (sent, completed, lost, wrongly failed, executed twice, seconds).
 * Each scenario must end with nothing lost, nothing wrongly failed and no crash, counted from the
 * rows in Cassandra (a raw client; each task has its own expected value). A task may run twice
 * only when it was in flight at the fault (executed, not yet acknowledged): each scenario states
 * that bound, 0 where nothing was in flight.
 */
const N = Number(process.env.FAULT_TASKS ?? 3000);
/** Chains of three steps in the workflow scenario (issue 13 item 6: 1,000). */
const CHAINS = Number(process.env.FAULT_CHAINS ?? 1000);
/** Generous bound on a worker's resident memory, whatever the fault. */
const RSS_LIMIT_MB = 400;
/** Bound on the worker's peak RSS during the 20 s Cassandra stall (measured 83–89 MB; see README, Reliability). */
const STALL_RSS_LIMIT_MB = 160;
/** Bound on the worker's peak RSS while it receives and refuses the 50 MB body (measured 189–248 MB; see README, Reliability). */
const HOSTILE_RSS_LIMIT_MB = 320;

jest.setTimeout(300000);

describe('fault suite', () => {
  let scenario: Scenario;

  beforeAll(async () => {
    // Cassandra fsyncs its commit log here (no skip_sync), as in production
    await ensureCassandraSyncs();
    expect(cassandraSyncs()).toBe(true);
    // the workers log in to Cassandra with a role of their own and a random password, asserted absent from their logs
    await useWorkerRole();
  });

  afterAll(async () => {
    await dropWorkerRole();
  });

  afterEach(async () => {
    await scenario?.close();
  });

  const expectClean = (report: Awaited<ReturnType<Scenario['finish']>>) => {
    expect(report).toMatchObject({ sent: report.sent, completed: report.sent, lost: 0, wronglyFailed: 0, crashes: 0 });
    // a task runs twice only if it was in flight at the fault: the scenario's stated bound (0 when nothing was)
    expect(report.executedTwice).toBeLessThanOrEqual(report.executedTwiceBound);
    // Security: no password reaches the worker's logs, stdout or stderr: not the broker URL's
    // (masked as ****), not the Cassandra one (CASSANDRA_PASSWORD).
    const cassandraPassword = workerCassandraPassword();
    expect(cassandraPassword).toMatch(/^Pw[0-9a-f]{24}$/);
    for (const worker of scenario.workers) {
      expect(worker.output).not.toContain(':guest@');
      expect(worker.output).not.toContain('guest:guest');
      expect(worker.output).not.toContain(cassandraPassword);
    }
  };

  /** Sends made while the broker is down must not resolve before it is back (no unconfirmed message). */
  const expectSendsWaitedForTheBroker = (during: SentTask[], lastRefusedAt: number | null, brokerDownAt: number) => {
    expect(during).toHaveLength(50);
    // the outage was seen: the AMQP port refused connections after the broker went down
    expect(lastRefusedAt).not.toBeNull();
    expect(lastRefusedAt as number).toBeGreaterThan(brokerDownAt);
    const early = during.filter((s) => s.resolvedAt <= (lastRefusedAt as number));
    expect(early).toHaveLength(0);
  };

  /**
   * SIGKILL to the worker once the workers have run `atLeast` tasks (fewer than `total`: it lands
   * mid-run); resolves the ids of its messages RabbitMQ redelivered (what was in flight).
   */
  const killMidRun = async (worker: WorkerProcess, atLeast: number, total: number): Promise<string[]> => {
    await scenario.waitUntilRun(atLeast);
    expect(scenario.markFault()).toBeLessThan(total);
    worker.signal('SIGKILL');
    expect(await worker.waitExit(10000)).toBe(true);
    // it really died of SIGKILL (no handler ran, nothing was acknowledged on the way out)
    expect(worker.exitSignal).toBe('SIGKILL');
    expect(worker.exitCode).toBeNull();
    // its unacknowledged messages came back marked redelivered: at most its prefetch window
    const ids = await redeliveredIds(scenario.queue);
    scenario.redelivered = ids.length;
    expect(ids.length).toBeGreaterThan(0);
    expect(ids.length).toBeLessThanOrEqual(worker.prefetch);
    return ids;
  };

  it('kill -9 of the worker mid-run, then a restart: every task completes', async () => {
    scenario = new Scenario('kill -9 and restart');
    await scenario.open();
    // Every task is queued before the worker starts, so the fault lands mid-run however fast it is.
    await scenario.send(N);
    const worker = await scenario.startWorker();
    const inFlight = await killMidRun(worker, N * 0.1, N);
    // a task may run twice only if it was in flight: one of the messages redelivered
    scenario.duplicateBound = { max: inFlight.length, why: 'the messages redelivered' };
    await scenario.startWorker();
    const report = await scenario.finish(120000);
    expectClean(report);
  });

  it('kill -9 of the worker while 1,000 three-step chains run, then a restart: every chain completes, a step runs twice only if it was in flight', async () => {
    scenario = new Scenario(`kill -9 and restart while ${CHAINS.toLocaleString('en-US')} three-step chains run (add → add → add)`);
    await scenario.open();
    // Every chain's first step is queued before the worker starts; the worker publishes steps 2 and 3 (frozen ids) as it goes.
    await scenario.sendChains(CHAINS);
    const steps = CHAINS * 3;
    const worker = await scenario.startWorker();
    // the fault lands once 40% of the steps have run: first steps done, second steps running (each publishing its third step);
    // what was in flight: the killed worker's unacknowledged messages, back in the queue marked redelivered
    const inFlight = await killMidRun(worker, steps * 0.4, steps);
    expect(inFlight.filter((id) => scenario.chainStepOf(id) === null)).toEqual([]);
    scenario.duplicateBound = { max: inFlight.length, why: 'the chain steps redelivered (in flight at the kill)' };
    const restarted = await scenario.startWorker();
    // per (chain, step): runs logged by either worker, and which steps ran twice (counted once the workers have stopped)
    const twiceOf = () => {
      const twice = scenario.executedTwiceIds();
      return { twice, byStep: [0, 1, 2].map((step) => twice.filter((id) => scenario.chainStepOf(id)?.step === step).length), notInFlight: twice.filter((id) => !inFlight.includes(id)) };
    };
    scenario.detailAtFinish = () => {
      const { twice, byStep, notInFlight } = twiceOf();
      // second copies of a step (published again by a step that ran twice) that found the first copy's SUCCESS and did not run
      const notRunAgain = restarted.lines.filter((l) => /was published again but already succeeded; not run again/.test(l)).length;
      const redeliveredDone = restarted.lines.filter((l) => /was redelivered but already succeeded; not run again/.test(l)).length;
      return (
        `run twice: ${byStep[0]} first, ${byStep[1]} second, ${byStep[2]} third steps, ${notInFlight.length === 0 ? 'every one' : `${twice.length - notInFlight.length}`} redelivered; ` +
        `${notRunAgain} steps published twice not run again (the first copy's SUCCESS found), ${redeliveredDone} redelivered steps already stored`
      );
    };
    const report = await scenario.finish(120000);
    const runs = scenario.executions();
    const { notInFlight: twiceNotInFlight } = twiceOf();
    expectClean(report);
    expect(report.sent).toBe(CHAINS);
    // never a broken chain: every step of every chain is stored with its own value, not only the last one
    const notOk = scenario.chains.flatMap((c) => c.steps).filter((step) => scenario.outcomeOf(step) !== 'ok');
    expect(notOk.map((step) => `${step.id}: ${JSON.stringify(scenario.rows.get(step.id) ?? [])}`)).toEqual([]);
    // every step ran, none three times, and a step ran twice only if its message was in flight at the kill
    expect(scenario.chains.flatMap((c) => c.steps).filter((step) => !runs.has(step.id))).toEqual([]);
    expect(Math.max(...runs.values())).toBeLessThanOrEqual(2);
    expect(twiceNotInFlight).toEqual([]);
  }, 180000);

  it.each([
    ['SIGTERM to the worker process', false],
    ['SIGTERM to the worker process group', true],
  ])('%s: consuming stops at once, in-flight tasks finish and are stored, exit code 0, the rest waits in the queue', async (name, group) => {
    scenario = new Scenario(name as string);
    await scenario.open();
    // Every task is queued before the worker starts, so the fault lands mid-run however fast it is.
    await scenario.send(N);
    const worker = await scenario.startWorker();
    const amqp = await RawAmqp.open();
    let consumerGoneMs: number | null = null;
    let runAtSignal = 0;
    try {
      await scenario.waitUntilRun(N * 0.1);
      expect((await amqp.channel.checkQueue(scenario.queue)).consumerCount).toBe(1);
      expect((runAtSignal = scenario.markFault())).toBeLessThan(N);
      const signalledAt = Date.now();
      worker.signal('SIGTERM', group as boolean);
      // consuming stops at once: the worker's consumer leaves the queue within about a second
      while (Date.now() - signalledAt < 5000) {
        if ((await amqp.channel.checkQueue(scenario.queue)).consumerCount === 0) {
          consumerGoneMs = Date.now() - signalledAt;
          break;
        }
        await sleep(10);
      }
    } finally {
      await amqp.close();
    }
    expect(consumerGoneMs).not.toBeNull();
    expect(consumerGoneMs as number).toBeLessThanOrEqual(1000);
    expect(await worker.waitExit(35000)).toBe(true);
    expect(worker.exitCode).toBe(0);
    expect(worker.output).toContain('SIGTERM received');
    // after the signal it ran only what it already held (its prefetch window), nothing newly consumed
    expect(worker.executions.size - runAtSignal).toBeLessThanOrEqual(worker.prefetch);
    await scenario.startWorker();
    const report = await scenario.finish(120000);
    expectClean(report);
    expect(report.executedTwice).toBe(0);
  });

  it('RabbitMQ stopped for 5 s (stop_app / start_app): worker and producer reconnect, nothing is lost', async () => {
    scenario = new Scenario('RabbitMQ stop_app 5 s');
    await scenario.open();
    await scenario.send(N);
    const worker = await scenario.startWorker();
    await scenario.waitUntilRun(N * 0.1);
    expect(scenario.markFault()).toBeLessThan(N);
    scenario.duplicateBound = { max: worker.prefetch, why: 'prefetch' };
    await rabbitmqctl('stop_app');
    const downAt = Date.now();
    const port = watchBrokerPort();
    let during: Promise<SentTask[]> = Promise.resolve([]);
    try {
      // a send while the broker is away waits for it and then succeeds
      during = scenario.send(50);
      await sleep(5000);
    } finally {
      await rabbitmqctl('start_app');
      await port.stop();
    }
    expectSendsWaitedForTheBroker(await during, port.lastRefusedAt(), downAt);
    const report = await scenario.finish(120000);
    expectClean(report);
    expect(report.sent).toBe(N + 50);
  });

  it('RabbitMQ fully restarted: worker and producer reconnect, declare their topology again, nothing is lost', async () => {
    scenario = new Scenario('RabbitMQ full restart');
    await scenario.open();
    await scenario.send(N);
    const worker = await scenario.startWorker();
    await scenario.waitUntilRun(N * 0.1);
    expect(scenario.markFault()).toBeLessThan(N);
    scenario.duplicateBound = { max: worker.prefetch, why: 'prefetch' };
    // asynchronous stop and start: the event loop runs on, so the 50 sends really wait through the outage
    await rabbitmqctl('stop', RABBITMQ_PID_FILE);
    const downAt = Date.now();
    const port = watchBrokerPort();
    let during: Promise<SentTask[]> = Promise.resolve([]);
    try {
      during = scenario.send(50);
      await sleep(2000);
    } finally {
      await services({}, 'up');
      await port.stop();
    }
    expectSendsWaitedForTheBroker(await during, port.lastRefusedAt(), downAt);
    const report = await scenario.finish(120000);
    expectClean(report);
    expect(report.sent).toBe(N + 50);
  });

  it('Cassandra stopped for 30 s and started again: results wait, the worker is back within seconds of Cassandra, every one is stored', async () => {
    scenario = new Scenario('Cassandra stop 30 s and start');
    await scenario.open();
    await scenario.send(N);
    const worker = await scenario.startWorker();
    await scenario.waitUntilRun(N * 0.1);
    const pid = cassandraPid();
    expect(scenario.markFault()).toBeLessThan(N);
    const linesBefore = worker.lines.length;
    let readyAt = 0;
    try {
      await stopCassandra(pid);
      await sleep(30000);
    } finally {
      await startCassandraOnItsData();
      readyAt = Date.now();
    }
    expect(cassandraSyncs()).toBe(true);
    // Once Cassandra answers, the worker stores again within seconds: the first result held
    // through the outage is stored (the driver's default schedule, 1 s doubling to 10 minutes,
    // can wait a minute here; ours is capped at 10 s).
    const storedAgain = () => worker.lines.slice(linesBefore).some((line) => / of \S+ after \d+ attempts/.test(line));
    while (!storedAgain() && Date.now() - readyAt < 90000) await sleep(50);
    const backAfterMs = Date.now() - readyAt;
    process.stderr.write(`[faults] Cassandra stop 30 s: first held result stored ${backAfterMs} ms after Cassandra answered\n`);
    if (!storedAgain() || backAfterMs >= 20000) {
      const since = worker.lines.slice(linesBefore).filter((l) => !/succeeded in/.test(l));
      process.stderr.write(`[faults] worker lines since the fault (without task runs):\n${since.slice(0, 60).join('\n')}\n`);
    }
    scenario.detail = `first held result stored ${(backAfterMs / 1000).toFixed(1)} s after Cassandra answered`;
    expect(worker.lines.slice(linesBefore).some((line) => /Cassandra node \S+ is down; reconnecting/.test(line))).toBe(true);
    expect(storedAgain()).toBe(true);
    expect(backAfterMs).toBeLessThan(20000);
    const report = await scenario.finish(180000);
    expectClean(report);
  });

  it('Cassandra stalled for 20 s (SIGSTOP / SIGCONT): nothing acknowledged or failed before it is stored, bounded memory', async () => {
    scenario = new Scenario('Cassandra SIGSTOP 20 s');
    await scenario.open();
    await scenario.send(N);
    const worker = await scenario.startWorker();
    await scenario.waitUntilRun(N * 0.1);
    const pid = cassandraPid();
    expect(scenario.markFault()).toBeLessThan(N);
    const linesBefore = worker.lines.length;
    process.kill(pid, 'SIGSTOP');
    const stalledAt = Date.now();
    const unacked = sampleUntilStopped(() => unacknowledged(scenario.queue));
    let duringStall: string[] = [];
    let samples: number[] = [];
    let resumedAt = 0;
    try {
      await sleep(20000);
    } finally {
      duringStall = worker.lines.slice(linesBefore);
      process.kill(pid, 'SIGCONT');
      resumedAt = Date.now();
      samples = await unacked.stop();
    }
    // memory stays bounded while results wait: the worker's peak RSS during the stall
    const stallRssMb = worker.peakRssMbBetween(stalledAt, resumedAt);
    scenario.detail = `worker peak RSS during the stall ${stallRssMb} MB, bound ${STALL_RSS_LIMIT_MB} MB`;
    // consuming pauses: the broker never has more unacknowledged messages out than the prefetch
    expect(samples.length).toBeGreaterThanOrEqual(5);
    scenario.peakUnacked = Math.max(...samples);
    expect(scenario.peakUnacked).toBeGreaterThan(0);
    expect(scenario.peakUnacked).toBeLessThanOrEqual(worker.prefetch);
    // the store is retried with back-off while Cassandra is stalled
    expect(duringStall.some((line) => line.includes('failed (attempt'))).toBe(true);
    scenario.detail = `peak ${scenario.peakUnacked} unacknowledged = prefetch ${worker.prefetch}; ${scenario.detail}`;
    const report = await scenario.finish(180000);
    expectClean(report);
    expect(stallRssMb).toBeGreaterThan(0);
    expect(stallRssMb).toBeLessThanOrEqual(STALL_RSS_LIMIT_MB);
    expect(report.peakRssMb).toBeLessThan(RSS_LIMIT_MB);
  });

  /** Every task of `tasks` has its SUCCESS row dated no earlier than its ETA. */
  const expectRanAfterEta = (tasks: SentTask[]) => {
    const early = tasks.filter((t) => (scenario.rows.get(t.id) ?? []).some((r) => r.status === 'SUCCESS' && (r.dateDone?.getTime() ?? 0) < (t.etaAt as number)));
    expect(early.map((t) => t.id)).toEqual([]);
  };

  it('ETA flood: 1,000 tasks with a 120 s countdown, then 1,000 immediate tasks: the immediate ones complete within 30 s, the ETA ones after their ETA', async () => {
    scenario = new Scenario('ETA flood: 1,000 tasks with a 120 s countdown, then 1,000 immediate tasks');
    await scenario.open();
    await scenario.startWorker();
    const held = await scenario.send(1000, { countdown: 120 });
    const immediateSentAt = Date.now();
    const immediate = await scenario.send(1000);
    // held ETA tasks must not stop the rest of the queue: the immediate ones are stored within seconds
    const immediateDoneAt = await scenario.waitForRows(immediate, 150000);
    const immediateSeconds = immediateDoneAt === null ? null : Math.round((immediateDoneAt - immediateSentAt) / 100) / 10;
    scenario.detail = `the 1,000 immediate tasks were stored ${immediateSeconds === null ? 'not within 150' : immediateSeconds} s after they were sent (bound 30 s)`;
    const report = await scenario.finish(180000);
    expectClean(report);
    expect(immediateSeconds).not.toBeNull();
    expect(immediateSeconds as number).toBeLessThanOrEqual(30);
    expectRanAfterEta(held);
  }, 400000);

  it('consumer_timeout expires on a long task: the worker consumes again, every task completes', async () => {
    scenario = new Scenario('RabbitMQ consumer_timeout (5 s) expires on an 8 s task, then 300 tasks');
    await scenario.open();
    let long: SentTask | undefined;
    const report = await withConsumerTimeout(5000, async () => {
      // started inside: its channels see the 5 s timeout, checked every 500 ms
      const worker = await scenario.startWorker();
      [long] = await scenario.send(1, { sleepSeconds: 8 });
      // RabbitMQ closes the consumer's channel (406 PRECONDITION_FAILED) about 5 s after the delivery
      const deadline = Date.now() + 20000;
      while (!/PRECONDITION.FAILED/.test(worker.output) && Date.now() < deadline) await sleep(50);
      scenario.markFault();
      // the long task was running when its channel closed: its redelivered copy waits for it in the same worker,
      // finds its SUCCESS and is not run again
      scenario.duplicateBound = { max: 0, why: 'one worker: the redelivered copy of the running task waits for it' };
      await scenario.send(300);
      return scenario.finish(60000);
    });
    expect(scenario.workers[0].output).toMatch(/PRECONDITION.FAILED/);
    expect(scenario.workers[0].output).toContain(`Task ${long?.id} is still being handled from an earlier delivery`);
    expectClean(report);
  });

  it('broker connection cut while 64 long tasks run and 200 ETA tasks are held: nothing lost or failed, nothing run twice (the running tasks\' redelivered copies wait for them)', async () => {
    scenario = new Scenario('broker connection cut: 64 tasks of 10 s running, 200 ETA tasks (30 s) held');
    await scenario.open();
    const worker = await scenario.startWorker();
    const long = await scenario.send(64, { sleepSeconds: 10 });
    const held = await scenario.send(200, { countdown: 30 });
    // wait until the worker holds them: 64 running (concurrency 64), the ETA ones held unacknowledged
    const deadline = Date.now() + 15000;
    let unacked = 0;
    while ((unacked = await unacknowledged(scenario.queue)) < Math.min(264, worker.prefetch) && Date.now() < deadline) await sleep(200);
    scenario.peakUnacked = unacked;
    scenario.markFault();
    await closeConnections('fault suite: connection cut');
    // the tasks running at the cut come back redelivered while they run: in the same worker each copy waits for its
    // run, finds the SUCCESS and is not run again (another worker could take a copy: the README's bound is the tasks running)
    scenario.duplicateBound = { max: 0, why: 'one worker: the redelivered copies of the running tasks wait for them' };
    const report = await scenario.finish(120000);
    expect(worker.lines.some((l) => /Broker connection lost/.test(l))).toBe(true);
    expectClean(report);
    expect(long.filter((t) => worker.output.includes(`Task ${t.id} is still being handled from an earlier delivery`)).length).toBeGreaterThan(0);
    expectRanAfterEta(held);
  });

  it('poison results: 3 tasks whose results are over worker.maxResultBytes among 3,000: each stored once as FAILURE ValueError and rejected, never retried; the rest complete', async () => {
    scenario = new Scenario('poison results: 3 results over worker.maxResultBytes (8 MiB) among 3,000 tasks');
    await scenario.open();
    await scenario.send(N / 2);
    // ~9 MiB of text: a message under worker.maxMessageBytes (10 MiB) whose sorted result is over maxResultBytes (8 MiB)
    const poisonText = (k: number) => Array.from({ length: 9000 }, (_, i) => `p${k}w${i}${'x'.repeat(1040)}`).join(' ');
    const poison = await Promise.all([0, 1, 2].map((k) => scenario.producer.sendTask('tasks.sortWords', { args: [poisonText(k), false] })));
    await scenario.send(N / 2);
    const worker = await scenario.startWorker();
    const report = await scenario.finish(180000);
    const amqp = await RawAmqp.open();
    try {
      expect(await amqp.depth(scenario.queue)).toBe(0); // rejected, not requeued: nothing loops
    } finally {
      await amqp.close();
    }
    for (const p of poison) {
      const rows = scenario.rows.get(p.id) ?? [];
      expect(rows.map((r) => r.status)).toEqual(['FAILURE']);
      expect(rows[0].result).toMatch(/"exc_type":\s*"ValueError"/);
      expect(rows[0].result).toMatch(/maxResultBytes/);
      expect(scenario.executions().get(p.id)).toBe(1);
    }
    // one line per poison task says so and names it: the result was not retried
    for (const p of poison) expect(worker.lines.filter((l) => l.includes(`Result of tasks.sortWords[${p.id}] cannot be stored`)).length).toBe(1);
    expectClean(report);
    expect(report.sent).toBe(N);
  });

  it('the stream-0 misroute on the real node: a Cassandra 5.0.8 node shedding requests answers them on stream 0; the guard drops those frames and every result is stored', async () => {
    // N (3,000) tasks: on this node (each shed store waits out its 12 s read timeout and is retried) they were all
    // acknowledged 43-122 s after the send, depending on how much it shed, so the load stops 60 s after the send at
    // the latest. The filler grows (2 loops a second) only until the node sheds: how many loops that takes varied
    // from 12 to 40 between runs (a fixed 20 did not make it shed in one run).
    scenario = new Scenario(`stream-0 misroute: a Cassandra 5.0.8 node shedding requests (1 request thread, native_transport_timeout 200ms) under a filler load, ${N.toLocaleString('en-US')} tasks`);
    // its own node (CQL 9145, storage 7104: not the ports of test/integration/cassandra-stream-misroute.spec.ts), commit log synced
    const node = await scenario.usePrivateNode({
      version: '5.0.8',
      port: 9145,
      storagePort: 7104,
      keyspace: 'celery_misroute',
      extraYaml: 'native_transport_max_threads: 1\nnative_transport_timeout: 200ms\n',
      skipSync: false,
    });
    expect(cassandraSyncs(node.pid())).toBe(true);
    // the filler load's own client and connection (not the workers', not the one the rows are read with)
    // (its connection never closed for timeouts: the driver's control connection shares it, and a refresh under shedding
    // still running at shutdown throws in cassandra-driver 4.10's ControlConnection._refresh)
    const load = await rawCassandra(scenario.cassandra, { socketOptions: { readTimeout: 12000, defunctReadTimeoutThreshold: 1e9 } });
    const stream0 = /Cassandra \S+ sent a reply on stream 0 that no request is waiting for.*\((\d+) so far on this client\)/;
    const dropped = () => Math.max(0, ...scenario.workers.flatMap((w) => w.lines.map((l) => Number(stream0.exec(l)?.[1] ?? 0))));
    let filler: ReturnType<typeof startFillerLoad> | null = null;
    try {
      await createLoadTables(load, scenario.cassandra.keyspace, 3000);
      await scenario.open();
      // the worker starts (and creates its table) before the load: only the stores meet the shedding node
      const worker = await scenario.startWorker();
      // the load grows until the node sheds, then stays: how much it takes depends on what else the machine runs
      // (12-44 fillers on a busy machine; 48 were not enough on a quiet one, in a clean-clone CI run)
      filler = startFillerLoad(load, { keyspace: scenario.cassandra.keyspace, fillerConcurrency: 4, maxFillers: 240, growBy: 4, growEveryMs: 1000, shedTarget: 1, readTimeoutMs: 3000 });
      const sheddingBy = Date.now() + 75000;
      while (filler.shed === 0 && Date.now() < sheddingBy) await sleep(100);
      expect(filler.shed).toBeGreaterThan(0); // the node sheds before the first task is sent
      const sentAt = Date.now();
      await scenario.send(N);
      // the load runs until every task is acknowledged (acknowledged only once its result is stored), 60 s at most:
      // how much the node sheds varies from run to run, and what is left is stored once the load stops
      const amqp = await RawAmqp.open();
      let left = N;
      try {
        const deadline = Date.now() + 60000;
        while ((left = (await amqp.depth(scenario.queue)) + (await unacknowledged(scenario.queue))) > 0 && Date.now() < deadline) await sleep(1000);
      } finally {
        await amqp.close();
      }
      const storedIn = Math.round((Date.now() - sentAt) / 1000);
      await filler.stop();
      // a shed store is retried by the worker; the task is not run again for it
      scenario.duplicateBound = { max: 0, why: 'a shed store is retried, the task is not re-run' };
      const retried = worker.lines.filter((l) => l.includes('failed (attempt')).length;
      const misrouted = misfitReplies(worker).length;
      scenario.detail = `${misrouted} store replies misrouted, ${left === 0 ? `every task acknowledged under the load, ${storedIn} s after the send` : `${N - left} tasks acknowledged under the load (stopped ${storedIn} s after the send)`}, ${dropped()}+ frames on stream 0 dropped by the worker's guard, ${retried} store attempts failed and retried, filler requests shed ${filler.shed} (${filler.fillers} fillers)`;
      const report = await scenario.finish(60000);
      expectClean(report);
      expect(report.sent).toBe(N);
      // no store request resolved with another request's reply (without the guard: hundreds, each caught by the
      // store's reply checks and retried, and the write answered with another write's reply, which no check can see)
      expect(misrouted).toBe(0);
      // the fault happened: the node answered shed requests on stream 0, and the guard dropped those frames
      expect(dropped()).toBeGreaterThan(0);
    } finally {
      await filler?.stop();
      await load.shutdown().catch(() => undefined);
    }
  });

  it('hostile input: 10,000 malformed messages among 1,000 valid tasks, a 50 MB body, deep nesting, __proto__ keys', async () => {
    scenario = new Scenario('hostile input');
    await scenario.open();
    const worker = await scenario.startWorker();
    const amqp = await RawAmqp.open();
    const hostile = hostileMessages(10000);
    try {
      for (let i = 0; i < hostile.length; i++) {
        const m = hostile[i];
        amqp.channel.sendToQueue(scenario.queue, m.body, m.options);
        if (i % 10 === 0 && scenario.results.length < 1000) await scenario.send(1);
        if (i % 500 === 0) await new Promise((r) => setImmediate(r));
      }
      await scenario.waitForRows(scenario.results, 180000);
      // every bad message was rejected (not requeued): the queue drains
      for (let i = 0; i < 100 && (await amqp.depth(scenario.queue)) > 0; i++) await sleep(200);
      expect(await amqp.depth(scenario.queue)).toBe(0);
      // the worker never held the 50 MB body for long nor more than once: its peak RSS (the whole run, the body included)
      scenario.detail = `worker peak RSS with the 50 MB body ${Math.round(worker.peakRssKb / 1024)} MB, bound ${HOSTILE_RSS_LIMIT_MB} MB`;
      const report = await scenario.finish(180000);
      expectClean(report);
      expect(report.sent).toBe(1000);
      expect(report.peakRssMb).toBeGreaterThan(50);
      expect(report.peakRssMb).toBeLessThanOrEqual(HOSTILE_RSS_LIMIT_MB);
    } finally {
      await amqp.close();
    }
    // it was alive to the end and stopped cleanly when asked
    expect(worker.signalled).toBe(true);
    expect(worker.exitCode).toBe(0);
    expectRejections(worker, hostile, scenario);
  });
});

type Outcome =
  /** rejected without requeue, with one log line naming the id (if any) and a reason matching `reason` */
  | { kind: 'reject'; reason: RegExp }
  /** either rejected as above, or run and stored as FAILURE with a result matching `failure` */
  | { kind: 'rejectOrFailure'; reason: RegExp; failure: RegExp[] };

interface HostileMessage {
  body: Buffer;
  options: { contentType: string; contentEncoding?: string; headers: Record<string, unknown>; correlationId?: string };
  /** The task id the worker can read from the message, or null. */
  id: string | null;
  outcome: Outcome;
  /** A valid message that may end as FAILURE, not a malformed one. */
  valid?: boolean;
}

/** Every kind of bad message the issue lists, cycled to `count`, and two valid tasks with __proto__ / constructor kwargs. */
function hostileMessages(count: number): HostileMessage[] {
  const json = 'application/json';
  const id = (i: number) => `bad-${i}`;
  const task = 'tasks.sortWords';
  const reject = (reason: RegExp): Outcome => ({ kind: 'reject', reason });
  const kinds: ((i: number) => HostileMessage)[] = [
    // no task header, body not a v1 object
    (i) => ({ body: Buffer.from('[["a"], {}, {}]'), options: { contentType: json, headers: { id: id(i) } }, id: id(i), outcome: reject(/no "task" header/) }),
    // no id header: the line has no id to name (the correlation id is not the task id)
    (i) => ({ body: Buffer.from('[["a"], {}, {}]'), options: { contentType: json, headers: { task }, correlationId: id(i) }, id: null, outcome: reject(/header "id" is missing/) }),
    // wrong header types
    (i) => ({ body: Buffer.from('[["a"], {}, {}]'), options: { contentType: json, headers: { task: 42, id: id(i) } }, id: id(i), outcome: reject(/header "task" is not a non-empty string/) }),
    (i) => ({ body: Buffer.from('[["a"], {}, {}]'), options: { contentType: json, headers: { task, id: id(i), eta: 'tomorrow' } }, id: id(i), outcome: reject(/eta: .*"tomorrow"/) }),
    // truncated JSON, not UTF-8
    (i) => ({ body: Buffer.from('[["a"], {}'), options: { contentType: json, headers: { task, id: id(i) } }, id: id(i), outcome: reject(/not valid JSON/) }),
    (i) => ({ body: Buffer.from([0x5b, 0x22, 0xff, 0xfe, 0x22, 0x5d]), options: { contentType: json, headers: { task, id: id(i) } }, id: id(i), outcome: reject(/not valid UTF-8/) }),
    // bodies of the wrong shape
    (i) => ({ body: Buffer.from('{"args": []}'), options: { contentType: json, headers: { task, id: id(i) } }, id: id(i), outcome: reject(/not a JSON array \[args, kwargs, embed\]/) }),
    (i) => ({ body: Buffer.from('[["a"], ["not", "a", "mapping"], {}]'), options: { contentType: json, headers: { task, id: id(i) } }, id: id(i), outcome: reject(/keyword arguments are not a mapping/) }),
    // pickle and other content types
    (i) => ({ body: Buffer.from('x'), options: { contentType: 'application/x-python-serialize', headers: { task, id: id(i) } }, id: id(i), outcome: reject(/content type "application\/x-python-serialize" is not accepted/) }),
    (i) => ({ body: Buffer.from('x'), options: { contentType: 'application/x-yaml', headers: { task, id: id(i) } }, id: id(i), outcome: reject(/content type "application\/x-yaml" is not accepted/) }),
    // unknown content encodings
    (i) => ({ body: Buffer.from('[["a b"], {}, {}]'), options: { contentType: json, contentEncoding: 'x-unknown', headers: { task, id: id(i) } }, id: id(i), outcome: reject(/content encoding "x-unknown"/) }),
    (i) => ({ body: Buffer.from('[["a b"], {}, {}]'), options: { contentType: json, contentEncoding: 'utf-16', headers: { task, id: id(i) } }, id: id(i), outcome: reject(/content encoding "utf-16"/) }),
    // unknown or lying compression
    (i) => ({ body: Buffer.from('[["a"], {}, {}]'), options: { contentType: json, headers: { task, id: id(i), compression: 'application/x-snappy' } }, id: id(i), outcome: reject(/compression "application\/x-snappy"/) }),
    (i) => ({ body: Buffer.from('[["a"], {}, {}]'), options: { contentType: json, headers: { task, id: id(i), compression: 'application/x-gzip' } }, id: id(i), outcome: reject(/decompress/) }),
    // a pickle envelope inside JSON
    (i) => ({ body: Buffer.from('[[{"__type__": "pickle", "__value__": "x"}], {}, {}]'), options: { contentType: json, headers: { task, id: id(i) } }, id: id(i), outcome: reject(/pickle/) }),
    // a deeply nested body
    (i) => ({ body: Buffer.from('['.repeat(5000) + ']'.repeat(5000)), options: { contentType: json, headers: { task, id: id(i) } }, id: id(i), outcome: reject(/not a JSON array/) }),
    // an unregistered task (with __proto__ keys): a FAILURE NotRegistered row, as Celery, and rejected
    (i) => ({
      body: Buffer.from('[["a b"], {"__proto__": {"polluted": true}, "constructor": {"prototype": {"polluted": true}}}, {}]'),
      options: { contentType: json, headers: { task: 'tasks.noSuchTaskProto', id: id(i) } },
      id: id(i),
      outcome: reject(/unregistered task "tasks\.noSuchTaskProto"/),
    }),
  ];
  const out = Array.from({ length: count }, (_, i) => kinds[i % kinds.length](i));
  // a 50 MB body: rejected for its size, before it is decoded
  out[count >> 1] = {
    body: Buffer.alloc(50 * 1024 * 1024, 0x20),
    options: { contentType: json, headers: { task, id: 'bad-50mb' } },
    id: 'bad-50mb',
    outcome: reject(/maxMessageBytes/),
  };
  // args nested 100,000 levels deep, for a registered task: rejected, or run and failed (a list is no text)
  out[count >> 2] = {
    body: Buffer.from(`[${'['.repeat(100000)}${']'.repeat(100000)}, {}, {}]`),
    options: { contentType: json, headers: { task, id: 'bad-nested-args' } },
    id: 'bad-nested-args',
    outcome: { kind: 'rejectOrFailure', reason: /nest|deep|JSON/i, failure: [/"TypeError"/] },
  };
  // valid sortWords tasks whose kwargs have __proto__ / constructor keys: plain keyword names, so
  // FAILURE TypeError naming '__proto__' (had the key set the prototype, the task would succeed)
  const protoTask = (taskId: string, kwargs: string): HostileMessage => ({
    body: Buffer.from(`[["b a"], ${kwargs}, {}]`),
    options: { contentType: json, headers: { task, id: taskId } },
    id: taskId,
    outcome: { kind: 'rejectOrFailure', reason: /__proto__/, failure: [/"TypeError"/, /unexpected keyword argument '__proto__'/] },
    valid: true,
  });
  out.splice(count >> 3, 0, protoTask('proto-kwargs-1', '{"__proto__": {"polluted": true}, "constructor": {"prototype": {"polluted": true}}}'));
  out.splice((count * 5) >> 3, 0, protoTask('proto-kwargs-2', '{"__proto__": {"capitalize": true}}'));
  return out;
}

/**
 * One rejection line per malformed message: lines are tallied by the task id they name (and, for
 * messages with no id, by reason), so a message logged twice or not at all fails, as does a line
 * without its id or reason.
 */
function expectRejections(worker: WorkerProcess, hostile: HostileMessage[], scenario: Scenario): void {
  const byId = new Map<string, string[]>();
  const withoutId: string[] = [];
  let total = 0;
  for (const line of worker.lines) {
    if (!line.includes('rejected without requeue')) continue;
    total++;
    const invalid = /Invalid task message(?: (\S+))?: (.+); rejected without requeue/.exec(line);
    const unregistered = /(Received unregistered task "[^"]*") \(id (\S+)\); rejected without requeue/.exec(line);
    if (invalid && invalid[1]) byId.set(invalid[1], [...(byId.get(invalid[1]) ?? []), invalid[2]]);
    else if (invalid) withoutId.push(invalid[2]);
    else if (unregistered) byId.set(unregistered[2], [...(byId.get(unregistered[2]) ?? []), unregistered[1]]);
    else throw new Error(`rejection line with neither a reason nor an id: ${line}`);
  }
  let expectedLines = 0;
  const idless: RegExp[] = [];
  const problems: string[] = [];
  for (const m of hostile) {
    const lines = m.id ? (byId.get(m.id) ?? []) : [];
    const rows = m.id ? (scenario.rows.get(m.id) ?? []) : [];
    if (m.id === null) {
      idless.push(m.outcome.reason);
      expectedLines++;
    } else if (m.outcome.kind === 'reject' || lines.length > 0) {
      expectedLines++;
      if (lines.length !== 1) problems.push(`${m.id}: ${lines.length} rejection lines`);
      else if (!m.outcome.reason.test(lines[0])) problems.push(`${m.id}: reason "${lines[0]}" does not match ${m.outcome.reason}`);
    } else {
      // not rejected: it ran, and every row it has is the expected FAILURE
      const failure = m.outcome.failure;
      if (rows.length === 0 || !rows.every((r) => r.status === 'FAILURE' && failure.every((f) => f.test(r.result)))) {
        problems.push(`${m.id}: neither rejected nor a FAILURE matching ${failure.join(' and ')}: ${JSON.stringify(rows).slice(0, 300)}`);
      }
    }
    // a malformed message never runs to a SUCCESS
    if (rows.some((r) => r.status === 'SUCCESS')) problems.push(`${m.id}: has a SUCCESS row`);
  }
  expect(problems).toEqual([]);
  // the messages with no id: one line each, with its reason
  expect(withoutId.length).toBe(idless.length);
  for (const reason of withoutId) expect(idless.some((r) => r.test(reason))).toBe(true);
  // nothing else was rejected: one line per malformed message, none for a valid task
  expect(total).toBe(expectedLines);
  expect(total).toBeGreaterThanOrEqual(10000 - 1);
  for (const { id } of scenario.results) expect(byId.has(id)).toBe(false);
}
