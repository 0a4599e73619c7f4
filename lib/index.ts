export { CeleryModule } from './celery.module';
export { CELERY_MODULE_OPTIONS } from './celery.module-definition';
export { CELERY_CONFIG } from './celery.constants';
export type { TaskEventsSwitch } from './worker/control/remote-control';
export type { CeleryModuleOptions, CassandraOptions, WorkerOptions, PythonCeleryConfig, CeleryOptionsInput } from './interfaces/celery-options.interface';
export type { GlobalRateLimitOptions } from './interfaces/celery-options.interface';
export type { ChordOptions } from './interfaces/celery-options.interface';
export { RateLimiter, createRateLimiter } from './worker/rate-limit';
export type { RateLimitSetting, TaskRateLimits } from './worker/rate-limit';
export type { ResolvedCeleryConfig, ResolvedCassandraConfig } from './config/resolved-config';
export { normalizeCeleryOptions } from './config/normalize-options';
export { Task } from './decorators/task.decorator';
export type { TaskOptions, ErrorMatcher, RateLimitOption } from './decorators/task.decorator';
export { TaskContext } from './decorators/task-context.decorator';
export type { DeliveryInfo, TaskFailure } from './decorators/task-context.decorator';
export { CeleryTaskContext, currentTask } from './worker/task-context';
export { isolatedTaskContext } from './worker/isolation/thread-context';
export type { IsolatedTaskContext } from './worker/isolation/thread-context';
export { WorkerLostError } from './worker/isolation/errors';
export {
  CeleryTaskException,
  Retry,
  MaxRetriesExceededError,
  SoftTimeLimitExceeded,
  TimeLimitExceeded,
  WorkerShutdown,
  TaskRevokedError,
} from './errors/task-exceptions';
export type { RetryOptions } from './errors/task-exceptions';
export { TaskRegistry } from './discovery/task.registry';
export type { RegisteredTask } from './discovery/task.registry';
export { Producer, TaskSignature } from './producer/producer.service';
export type { SendTaskOptions, SignatureResult, ChainResult } from './producer/producer.service';
// workflows (producer side): signatures, chain / group / chord
export { Signature, GroupSignature, InvalidSignatureError, signatureToDict, signatureFromDict, chainSignature, groupSignature, chordSignature } from './protocol/canvas';
export type { SignatureDict, SignatureOptions, ChordCompletion } from './protocol/canvas';
export { CHORD_COUNTER_HEADER } from './protocol/canvas';
export { AsyncResult } from './results/async-result';
export type { GetOptions, AsyncRevokeOptions } from './results/async-result';
// remote control from NestJS (Celery's app.control / inspect())
export { CeleryControl, CeleryInspect } from './control/celery-control';
export type { ControlTarget, BroadcastOptions, RevokeOptions, AddConsumerOptions, CommandOptions } from './control/celery-control';
export type {
  ByNode,
  CommandReply,
  PingReply,
  TaskRequestInfo,
  DeliveryInfoReply,
  ScheduledTaskInfo,
  ActiveQueueInfo,
  WorkerStatsReply,
  QueryTaskReply,
} from './control/control-replies';
export { ResultStore } from './results/result-store.interface';
export { CassandraResultStore } from './results/cassandra.result-store';
export { MemoryResultStore } from './results/memory.result-store';
export { Broker } from './broker/broker.interface';
export type { Delivery, OutgoingMessage, ConsumerHandle, PublishRoute } from './broker/broker.interface';
export type { ExchangeType, QueueDefinition, QueueType, RouteFunction, RouteOptions, RouteTarget, TaskRoutesInput, QueueDeclaration, TopologyStep } from './protocol/routing';
export { calculateDelayedRoutingKey, X_DEATH_HEADERS } from './protocol/routing';
export { MemoryBroker } from './broker/memory.broker';
export { AmqpBroker } from './broker/amqp.broker';
export { CeleryWorker } from './worker/celery.worker';
export { WorkerEvents } from './events/worker-events';
export type { WorkerEventsSwitch, TaskEventHooks } from './events/worker-events';
export { CeleryClock } from './events/event-clock';
export type { EventMessage } from './broker/broker.interface';
export type { TaskState } from './protocol/states';
export type { TaskMeta, ResultRow } from './protocol/result-row';
export {
  CeleryError,
  CeleryConfigError,
  CeleryConnectionError,
  CeleryBrokerRefusedError,
  ResultTooLargeError,
  InvalidTaskMessageError,
  InvalidRateLimitError,
  TaskFailedError,
  TaskNotRegisteredError,
  TaskRegistrationError,
  TaskTimeoutError,
} from './errors/celery.errors';
export { PyDate, PyDecimal, PyTime, PyUUID } from './protocol/kombu-types';
// result states and options (trackStarted, forget, children, result expiry, resultExtended)
export { GroupResult } from './results/async-result';
export { InvalidResultError, InvalidControlRequestError } from './errors/celery.errors';
export type { ExtendedResult, ResultToStore } from './protocol/result-row';
export type { ResultTuple } from './protocol/result-tuple';
// periodic tasks (issue 15 item 5)
export { Periodic } from './decorators/periodic.decorator';
export type { PeriodicOptions } from './decorators/periodic.decorator';
export { PeriodicScheduler, PERIODIC_TASK_NAME_HEADER, PERIODIC_TICK_HEADER } from './scheduler/periodic.scheduler';
export type { PeriodicEntry, PeriodicSendOptions, PeriodicTiming } from './scheduler/periodic-entry';
export type { SchedulerOptions, BeatScheduleEntry } from './interfaces/celery-options.interface';
// guards, interceptors, pipes and filters on tasks (execution context type 'celery')
export { CeleryExecutionContext, CELERY_CONTEXT_TYPE } from './enhancers/celery-execution-context';
export type { CeleryContextType, TaskPayload } from './enhancers/celery-execution-context';
export { TaskRefusedError, InvalidTaskArgumentsError } from './enhancers/enhancer-errors';
// health (issue 15 item 2): the terminus indicator is in 'nestjs-celery/terminus'
export { CeleryHealth } from './health/celery-health';
export type { CeleryHealthReport, CeleryHealthOptions, QueueHealth } from './health/celery-health';
export type { BrokerStatus, PublishObserver } from './broker/broker.interface';
// metrics (issue 15 item 3): prom-client is loaded only when `metrics.enabled`; the Prometheus class is in 'nestjs-celery/metrics'
export { CELERY_METRICS, CELERY_METRICS_REGISTRY } from './metrics/task-metrics';
export type { MetricsOptions, CeleryMetricsSink, TaskMetricsHooks, WorkerGaugeSource } from './metrics/task-metrics';
