import { Injectable } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import { context, propagation, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { CeleryModule, Producer, Task, TaskContext } from '../../../lib';
import { Broker } from '../../../lib/broker/broker.interface';
import { tracePublish, traceRun } from '../../../lib/tracing/task-tracing';

@Injectable()
class TracedTasks {
  readonly headers: Record<string, unknown>[] = [];

  @Task('traced.echo')
  echo(x: number, @TaskContext() ctx: TaskContext): number {
    this.headers.push({ ...ctx.headers });
    // a span the task makes is a child of its run span
    trace.getTracer('app').startSpan('inside the task').end();
    return x;
  }

  @Task('traced.fail')
  fail(): never {
    throw new RangeError('bad input');
  }
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/;

function installSdk(): InMemorySpanExporter {
  const exporter = new InMemorySpanExporter();
  trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  return exporter;
}

function uninstallSdk(): void {
  trace.disable();
  context.disable();
  propagation.disable();
}

async function embeddedApp(): Promise<TestingModule> {
  const app = await Test.createTestingModule({ imports: [CeleryModule.forRoot({ resultPollIntervalMs: 5 })], providers: [TracedTasks] }).compile();
  await app.init();
  return app;
}

const byName = (spans: ReadableSpan[], name: string) => spans.filter((s) => s.name === name);

/** The finished spans once `count` run spans have ended (a run span ends just after its result is stored and pushed). */
async function finishedSpans(exporter: InMemorySpanExporter, count = 1): Promise<ReadableSpan[]> {
  for (let i = 0; i < 200 && byName(exporter.getFinishedSpans(), 'process celery').length < count; i++) await new Promise((r) => setTimeout(r, 5));
  return exporter.getFinishedSpans();
}

describe('OpenTelemetry spans (memory://, in-memory span exporter)', () => {
  let exporter: InMemorySpanExporter;
  let app: TestingModule;

  beforeEach(async () => {
    exporter = installSdk();
    app = await embeddedApp();
  });

  afterEach(async () => {
    await app.close();
    uninstallSdk();
  });

  it('a publish is a PRODUCER span `send <queue>`, the run a CONSUMER span `process <queue>` in the same trace, child of it and linked to it', async () => {
    const producer = app.get(Producer);
    const result = await producer.sendTask('traced.echo', { args: [7], taskId: 'trace-id-1' });
    await expect(result.get({ timeout: 3000 })).resolves.toBe(7);

    const spans = await finishedSpans(exporter);
    const [send] = byName(spans, 'send celery');
    const [run] = byName(spans, 'process celery');
    // both sides: the messaging conventions' attributes and the Python instrumentation's task name
    const common = { 'messaging.system': 'rabbitmq', 'messaging.destination.name': 'celery', 'messaging.rabbitmq.destination.routing_key': 'celery', 'messaging.message.id': 'trace-id-1', 'celery.task_name': 'traced.echo' };
    expect(send.kind).toBe(SpanKind.PRODUCER);
    expect(send.attributes).toMatchObject({ ...common, 'messaging.operation.type': 'send', 'celery.action': 'apply_async' });
    expect(run.kind).toBe(SpanKind.CONSUMER);
    expect(run.attributes).toMatchObject({ ...common, 'messaging.operation.type': 'process', 'celery.action': 'run', 'celery.state': 'SUCCESS' });
    expect(run.spanContext().traceId).toBe(send.spanContext().traceId);
    expect(run.parentSpanContext?.spanId).toBe(send.spanContext().spanId);
    expect(run.links.map((l) => l.context.spanId)).toEqual([send.spanContext().spanId]);
    const [inside] = byName(spans, 'inside the task');
    expect(inside.parentSpanContext?.spanId).toBe(run.spanContext().spanId);
  });

  it('the context travels in the message as the W3C `traceparent` application header, as opentelemetry-instrumentation-celery writes it', async () => {
    const published: Record<string, unknown>[] = [];
    const broker = app.get(Broker);
    const publish = broker.publish.bind(broker);
    jest.spyOn(broker, 'publish').mockImplementation((queue, message, route) => {
      published.push(message.headers as Record<string, unknown>);
      return publish(queue, message, route);
    });
    const result = await app.get(Producer).sendTask('traced.echo', { args: [1] });
    await result.get({ timeout: 3000 });
    const [send] = byName(exporter.getFinishedSpans(), 'send celery');
    const header = published.find((h) => h.task === 'traced.echo')?.traceparent;
    expect(header).toBe(`00-${send.spanContext().traceId}-${send.spanContext().spanId}-01`);
    // and reaches the task's request, as Celery's request holds the message's headers
    expect(app.get(TracedTasks).headers[0].traceparent).toBe(header);
  });

  it('a publish inside an active span (an HTTP request, say) is its child', async () => {
    const outer = trace.getTracer('app').startSpan('http request');
    const result = await context.with(trace.setSpan(context.active(), outer), () => app.get(Producer).sendTask('traced.echo', { args: [2] }));
    outer.end();
    await result.get({ timeout: 3000 });
    const [send] = byName(exporter.getFinishedSpans(), 'send celery');
    expect(send.parentSpanContext?.spanId).toBe(outer.spanContext().spanId);
    expect(send.spanContext().traceId).toBe(outer.spanContext().traceId);
  });

  it('a task that fails: its span has status ERROR and the exception as an event', async () => {
    const result = await app.get(Producer).sendTask('traced.fail');
    await expect(result.get({ timeout: 3000 })).rejects.toThrow('bad input');
    const [run] = byName(await finishedSpans(exporter), 'process celery');
    expect(run.status).toEqual({ code: SpanStatusCode.ERROR, message: 'ValueError: bad input' }); // the type as stored, as a Python client reads it
    expect(run.attributes['celery.state']).toBe('FAILURE');
    expect(run.events[0].name).toBe('exception');
    expect(run.events[0].attributes).toMatchObject({ 'exception.type': 'ValueError', 'exception.message': 'bad input' });
  });

  it('a chain: the worker publishes the next step inside the run span, so the whole chain is one trace', async () => {
    const producer = app.get(Producer);
    const result = await producer.chain(producer.signatureByName('traced.echo', [3]), producer.signatureByName('traced.echo', []));
    await expect(result.get({ timeout: 3000 })).resolves.toBe(3);
    const spans = await finishedSpans(exporter, 2);
    const runs = byName(spans, 'process celery');
    const sends = byName(spans, 'send celery');
    expect(runs).toHaveLength(2);
    expect(sends).toHaveLength(2);
    expect(new Set(spans.map((s) => s.spanContext().traceId)).size).toBe(1);
    // the second send is a child of the first run, the second run of the second send
    const [firstRun, secondRun] = [runs.find((r) => r.parentSpanContext?.spanId === sends[0].spanContext().spanId), runs.find((r) => r.parentSpanContext?.spanId === sends[1].spanContext().spanId)];
    expect(firstRun).toBeDefined();
    expect(secondRun).toBeDefined();
    expect(sends[1].parentSpanContext?.spanId).toBe(firstRun?.spanContext().spanId);
  });

  it('reads a traceparent written by a Python client (header as py-amqp delivers it)', async () => {
    const span = traceRun(
      { task: 'tasks.add', id: 'py-1', retries: 0, headers: { task: 'tasks.add', id: 'py-1', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' } },
      { exchange: '', routingKey: 'celery' },
      'w@h',
    );
    expect(span).not.toBeNull();
    await span?.within(async () => {
      expect(trace.getActiveSpan()?.spanContext().traceId).toBe('0af7651916cd43dd8448eb211c80319c');
    });
    span?.outcome('SUCCESS', null);
    span?.end();
    const [run] = exporter.getFinishedSpans();
    expect(run.spanContext().traceId).toBe('0af7651916cd43dd8448eb211c80319c');
    expect(run.parentSpanContext?.spanId).toBe('b7ad6b7169203331');
    expect(run.parentSpanContext?.isRemote).toBe(true);
  });
});

describe('OpenTelemetry off: no SDK registered', () => {
  it('no span, no header, publish called with null and run spans are null', async () => {
    uninstallSdk();
    propagation.setGlobalPropagator(new W3CTraceContextPropagator()); // a propagator alone does not turn tracing on
    try {
      const seen: unknown[] = [];
      await tracePublish({ task: 't', id: '1' }, { queue: { name: 'celery' }, exchange: '', routingKey: 'celery' }, async (headers) => {
        seen.push(headers);
      });
      expect(seen).toEqual([null]);
      expect(traceRun({ task: 't', id: '1', retries: 0, headers: {} }, { exchange: '', routingKey: 'celery' }, 'w')).toBeNull();

      const app = await embeddedApp();
      try {
        const result = await app.get(Producer).sendTask('traced.echo', { args: [5] });
        await expect(result.get({ timeout: 3000 })).resolves.toBe(5);
        expect(app.get(TracedTasks).headers[0].traceparent).toBeUndefined();
      } finally {
        await app.close();
      }
    } finally {
      propagation.disable();
    }
  });

  it('works without @opentelemetry/api installed: the require fails and the library runs', async () => {
    await jest.isolateModulesAsync(async () => {
      jest.doMock('@opentelemetry/api', () => {
        throw new Error("Cannot find module '@opentelemetry/api'");
      });
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const lib = require('../../../lib') as typeof import('../../../lib');
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const tracing = require('../../../lib/tracing/task-tracing') as typeof import('../../../lib/tracing/task-tracing');
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const { Test: IsolatedTest } = require('@nestjs/testing') as typeof import('@nestjs/testing');
      expect(tracing.traceRun({ task: 't', id: '1', retries: 0, headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' } }, { exchange: '', routingKey: 'q' }, 'w')).toBeNull();
      @Injectable()
      class Plain {
        @lib.Task('plain.add')
        add(x: number, y: number): number {
          return x + y;
        }
      }
      const app = await IsolatedTest.createTestingModule({ imports: [lib.CeleryModule.forRoot({ resultPollIntervalMs: 5 })], providers: [Plain] }).compile();
      await app.init();
      try {
        const result = await app.get(lib.Producer).sendTask('plain.add', { args: [2, 3] });
        await expect(result.get({ timeout: 3000 })).resolves.toBe(5);
      } finally {
        await app.close();
      }
    });
  });
});
