import { Test, TestingModule } from '@nestjs/testing';
import { context, propagation, SpanKind, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CeleryModule, Producer } from '../../lib';
import { TasksService } from '../../sample/tasks.service';
import { eventually, uniqueName } from '../support/real-services';
import { ensurePythonCelery, ensurePythonCelery52, ensurePythonOtel, envFor, PYTHON_DIR, PythonEnv, PythonWorker, stopInterop, VENV, VENV_52, walkthroughCeleryconfig } from './support/python-celery';

const run = promisify(execFile);

/** A span as test/interop/python/traced.py writes it (one JSON line each). */
interface PySpan {
  name: string;
  kind: string;
  trace_id: string;
  span_id: string;
  parent_span_id: string | null;
  attributes: Record<string, unknown>;
}

function pySpans(file: string): PySpan[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.trim())
    .map((line) => JSON.parse(line) as PySpan);
}

/**
 * One trace across languages, both ways (issue 15, item 4): the W3C context travels in the task
 * message's AMQP application headers (`traceparent`), where Python's opentelemetry-instrumentation-celery
 * injects and reads it. Both sides record spans with in-memory exporters: ours in this process, the
 * Python side's written as JSON lines to a file (traced.py).
 */
const exporter = new InMemorySpanExporter();

beforeAll(() => {
  trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
});

afterAll(() => {
  trace.disable();
  context.disable();
  propagation.disable();
});

describe.each([
  ['5.7', VENV, ensurePythonCelery, undefined],
  ['5.2.6', VENV_52, ensurePythonCelery52, '5.2' as const],
])('traces across languages with Celery %s (OpenTelemetry, Python opentelemetry-instrumentation-celery)', (label, venv, ensureCelery, peerCompat) => {
  const dir = mkdtempSync(join(tmpdir(), 'otel-interop-'));
  const workerSpans = join(dir, 'worker-spans.jsonl');
  const clientSpans = join(dir, 'client-spans.jsonl');
  const env: PythonEnv = { pyQueue: uniqueName('py_traced'), table: uniqueName('traces'), venv, extraEnv: { OTEL_SPANS_FILE: workerSpans } };
  const jsQueue = uniqueName('js_traced');
  let celeryVersion: string;
  let otelVersions: string;
  let worker: PythonWorker;
  let app: TestingModule;

  beforeAll(async () => {
    celeryVersion = ensureCelery();
    otelVersions = ensurePythonOtel(venv);
    app = await Test.createTestingModule({
      imports: [CeleryModule.forRoot({ ...walkthroughCeleryconfig(env, jsQueue), ...(peerCompat ? { peerCompat } : {}), resultPollIntervalMs: 50, worker: { hostname: `nestjs-traces-${label}@localhost` } })],
      providers: [TasksService],
    }).compile();
    await app.init();
    worker = await PythonWorker.start(env, { app: 'traced' });
  }, 240000);

  afterAll(() => stopInterop(worker, app, env, [env.pyQueue, jsQueue]));

  it(`runs Celery ${label} with the OpenTelemetry Python SDK and opentelemetry-instrumentation-celery from PyPI`, () => {
    expect(celeryVersion.startsWith(label === '5.7' ? '5.' : '5.2.6')).toBe(true);
    if (label === '5.7') expect(Number(/^5\.(\d+)/.exec(celeryVersion)?.[1])).toBeGreaterThanOrEqual(7);
    expect(otelVersions).toMatch(/^1\.\d+\.\d+ 0\.\d+b\d+$/);
  });

  it('NestJS Producer → Python worker: the Python task span is in our trace, child of our publish span', async () => {
    const result = await app.get(Producer).sendTask('tasks.add', { args: [2, 3], queue: env.pyQueue });
    await expect(result.get({ timeout: 30000 })).resolves.toBe(5);

    const send = exporter.getFinishedSpans().find((s) => s.name === `send ${env.pyQueue}` && s.attributes['messaging.message.id'] === result.id) as ReadableSpan;
    expect(send.kind).toBe(SpanKind.PRODUCER);
    let pyRun: PySpan | undefined;
    await eventually(async () => (pyRun = pySpans(workerSpans).find((s) => s.name === 'run/tasks.add' && s.attributes['messaging.message.id'] === result.id)) !== undefined, 15000);
    expect(pyRun).toMatchObject({ kind: 'CONSUMER', trace_id: send.spanContext().traceId, parent_span_id: send.spanContext().spanId });
    expect(pyRun?.attributes['celery.task_name']).toBe('tasks.add');
  }, 60000);

  it('instrumented Python client → NestJS worker: our task span is in the Python trace, child of its publish span', async () => {
    const { stdout } = await run(join(venv, 'bin', 'python'), ['traced_client.py', jsQueue, '20', '22'], {
      cwd: PYTHON_DIR,
      env: envFor({ ...env, extraEnv: { OTEL_SPANS_FILE: clientSpans } }),
      timeout: 90000,
    });
    const sent = JSON.parse(stdout.trim().split('\n').pop() as string) as { id: string; result: number };
    expect(sent.result).toBe(42);

    const pySend = pySpans(clientSpans).find((s) => s.name === 'apply_async/tasks.add' && s.attributes['messaging.message.id'] === sent.id);
    expect(pySend).toMatchObject({ kind: 'PRODUCER' });
    let ours: ReadableSpan | undefined;
    await eventually(async () => (ours = exporter.getFinishedSpans().find((s) => s.name === `process ${jsQueue}` && s.attributes['messaging.message.id'] === sent.id)) !== undefined, 15000);
    expect(ours?.kind).toBe(SpanKind.CONSUMER);
    expect(ours?.spanContext().traceId).toBe(pySend?.trace_id);
    expect(ours?.parentSpanContext?.spanId).toBe(pySend?.span_id);
    expect(ours?.parentSpanContext?.isRemote).toBe(true);
    expect(ours?.attributes).toMatchObject({ 'celery.task_name': 'tasks.add', 'celery.state': 'SUCCESS', 'messaging.system': 'rabbitmq' });
  }, 120000);
});
