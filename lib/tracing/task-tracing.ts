/**
 * OpenTelemetry spans for task messages (README, "Traces (OpenTelemetry)"): a PRODUCER span per
 * published task message, a CONSUMER span per task run, and the trace context carried in the
 * message's application headers (`traceparent`, `tracestate`) — where Python's
 * `opentelemetry-instrumentation-celery` injects it (`before_task_publish`'s `headers`, the
 * protocol v2 AMQP headers) and reads it back (the worker's `task.request`, built from those headers).
 *
 * Only `@opentelemetry/api` is used (an optional peer): it is required lazily, and when it is
 * absent or no tracer provider is registered every function here returns null after one check.
 */
import type * as OtelApi from '@opentelemetry/api';

type Api = typeof OtelApi;

/** Instrumentation scope of our spans. */
export const TRACER_NAME = 'nestjs-celery';

let loaded: Api | null | undefined;
let noopProvider: unknown;

/** `@opentelemetry/api`, or null when it is not installed (required once). */
function api(): Api | null {
  if (loaded === undefined) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      loaded = require('@opentelemetry/api') as Api;
      // the API's no-op provider is a module singleton: a fresh proxy without a delegate returns it
      noopProvider = new loaded.ProxyTracerProvider().getDelegate();
    } catch {
      loaded = null;
    }
  }
  return loaded;
}

/** The API when a tracer provider is registered; null otherwise (the fast path: no span, no header). */
function activeApi(): Api | null {
  const otel = api();
  if (!otel) return null;
  const provider = otel.trace.getTracerProvider();
  if (provider instanceof otel.ProxyTracerProvider && provider.getDelegate() === noopProvider) return null;
  return otel;
}

function tracer(otel: Api): OtelApi.Tracer {
  return otel.trace.getTracer(TRACER_NAME);
}

/** The task message a publish span is for (a TaskMessageSpec). */
export interface PublishTask {
  task: string;
  id: string;
}

/** Where it goes (a routed Destination): the queue the route chose, if any, the exchange and the routing key. */
export interface PublishDestination {
  queue: { name: string } | null;
  exchange: string;
  routingKey: string;
}

/**
 * Runs `publish` inside a PRODUCER span `send <queue>` (child of the active context) and hands it
 * the trace headers to add to the message (`traceparent`, `tracestate`, as the registered
 * propagator writes them). Without a tracer provider: `publish(null)`, nothing else.
 */
export function tracePublish<T>(target: PublishTask, to: PublishDestination, publish: (traceHeaders: Record<string, string> | null) => Promise<T>): Promise<T> {
  const otel = activeApi();
  return otel ? publishInSpan(otel, target, to, publish) : publish(null);
}

async function publishInSpan<T>(otel: Api, target: PublishTask, to: PublishDestination, publish: (traceHeaders: Record<string, string> | null) => Promise<T>): Promise<T> {
  const destination = to.queue?.name ?? (to.routingKey || to.exchange);
  const span = tracer(otel).startSpan(`send ${destination}`, {
    kind: otel.SpanKind.PRODUCER,
    attributes: {
      'messaging.system': 'rabbitmq',
      'messaging.operation.type': 'send',
      'messaging.operation.name': 'send',
      'messaging.destination.name': destination,
      'messaging.rabbitmq.destination.routing_key': to.routingKey,
      'messaging.message.id': target.id,
      'messaging.message.conversation_id': target.id,
      // the attributes opentelemetry-instrumentation-celery sets on its `apply_async/<task>` span
      'celery.action': 'apply_async',
      'celery.task_name': target.task,
    },
  });
  const spanContext = otel.trace.setSpan(otel.context.active(), span);
  const headers: Record<string, string> = {};
  otel.propagation.inject(spanContext, headers);
  try {
    return await otel.context.with(spanContext, () => publish(headers));
  } catch (err) {
    failSpan(otel, span, err);
    throw err;
  } finally {
    span.end();
  }
}

/** What a task run's span needs of its message (a DecodedTask). */
export interface RunTask {
  task: string;
  id: string;
  retries: number;
  headers: Record<string, unknown>;
}

/** Where the message came from (a Delivery). */
export interface RunDelivery {
  exchange: string;
  routingKey: string;
}

/** The CONSUMER span of one task run (see {@link traceRun}). */
export interface TaskRunSpan {
  /** Runs `fn` with the span as the active context (spans and publishes inside become its children). */
  within<T>(fn: () => Promise<T>): Promise<T>;
  /** How the run ended: its state (SUCCESS, FAILURE, RETRY, REVOKED, ...) and, for errors, the exception. */
  outcome(state: string, exception: { exc_type: string; exc_message: unknown } | null): void;
  end(): void;
}

const headerGetter: OtelApi.TextMapGetter<Record<string, unknown>> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => {
    const value = carrier[key];
    if (typeof value === 'string') return value;
    if (Buffer.isBuffer(value)) return value.toString('utf8');
    return undefined;
  },
};

/**
 * Starts the CONSUMER span `process <queue>` of a task run: its parent is the context the message
 * carries (`traceparent` in its headers, as a Python producer instrumented with
 * opentelemetry-instrumentation-celery or our Producer writes it), also given as a link. Null
 * without a tracer provider.
 */
export function traceRun(target: RunTask, delivery: RunDelivery, hostname: string): TaskRunSpan | null {
  const otel = activeApi();
  if (!otel) return null;
  const parent = otel.propagation.extract(otel.context.active(), target.headers, headerGetter);
  const producer = otel.trace.getSpanContext(parent);
  const destination = delivery.routingKey || delivery.exchange;
  const attributes: OtelApi.Attributes = {
    'messaging.system': 'rabbitmq',
    'messaging.operation.type': 'process',
    'messaging.operation.name': 'process',
    'messaging.destination.name': destination,
    'messaging.rabbitmq.destination.routing_key': delivery.routingKey,
    'messaging.message.id': target.id,
    'messaging.message.conversation_id': target.id,
    'celery.action': 'run',
    'celery.task_name': target.task,
    'celery.hostname': hostname,
  };
  if (target.retries > 0) attributes['celery.retries'] = target.retries;
  const span = tracer(otel).startSpan(
    `process ${destination}`,
    { kind: otel.SpanKind.CONSUMER, attributes, links: producer && otel.isSpanContextValid(producer) ? [{ context: producer }] : [] },
    parent,
  );
  const active = otel.trace.setSpan(parent, span);
  return {
    within: (fn) => otel.context.with(active, fn),
    outcome(state, exception) {
      span.setAttribute('celery.state', state);
      if (state === 'FAILURE' && exception) {
        const message = Array.isArray(exception.exc_message) ? exception.exc_message.map(String).join(', ') : String(exception.exc_message);
        span.recordException({ name: exception.exc_type, message });
        span.setStatus({ code: otel.SpanStatusCode.ERROR, message: `${exception.exc_type}: ${message}` });
      } else if (state === 'RETRY' && exception) {
        span.setAttribute('celery.retry.reason', `${exception.exc_type}: ${String(exception.exc_message)}`);
      }
    },
    end: () => span.end(),
  };
}

function failSpan(otel: Api, span: OtelApi.Span, err: unknown): void {
  const error = err instanceof Error ? err : new Error(String(err));
  span.recordException(error);
  span.setStatus({ code: otel.SpanStatusCode.ERROR, message: error.message });
}
