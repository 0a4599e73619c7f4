import { normalizeCeleryOptions } from '../../../lib/config/normalize-options';
import { perConsumerQos, queueTableOf } from '../../../lib/config/queue-table';
import { CeleryConfigError } from '../../../lib/errors/celery.errors';
import type { CeleryOptionsInput } from '../../../lib/interfaces/celery-options.interface';

function configError(input: unknown): CeleryConfigError {
  try {
    normalizeCeleryOptions(input as CeleryOptionsInput);
  } catch (err) {
    expect(err).toBeInstanceOf(CeleryConfigError);
    return err as CeleryConfigError;
  }
  throw new Error('normalizeCeleryOptions accepted the options');
}

describe('normalizeCeleryOptions: routing, priorities and queue types', () => {
  it('reads a celeryconfig\'s routing keys as they are written', () => {
    const config = normalizeCeleryOptions({
      task_default_queue: 'jobs',
      task_default_exchange: 'jobs_x',
      task_default_exchange_type: 'topic',
      task_default_routing_key: 'jobs.default',
      task_queue_max_priority: 10,
      task_default_queue_type: 'quorum',
      task_create_missing_queue_type: 'classic',
      broker_native_delayed_delivery_queue_type: 'classic',
      task_default_priority: 3,
      worker_detect_quorum_queues: false,
      task_queues: { reports: { exchange: 'reports_x', exchange_type: 'fanout', binding_key: 'r', queue_arguments: { 'x-max-priority': 4 } } },
      task_routes: { 'reports.*': { queue: 'reports', routing_key: 'r.daily' } },
    } as CeleryOptionsInput);
    expect(config.routing).toMatchObject({
      defaultQueue: 'jobs',
      defaultExchange: 'jobs_x',
      defaultExchangeType: 'topic',
      defaultRoutingKey: 'jobs.default',
      queueMaxPriority: 10,
      queueType: 'quorum',
      createMissingQueueType: 'classic',
      delayedDeliveryQueueType: 'classic',
      queues: [['reports', { exchange: 'reports_x', exchangeType: 'fanout', routingKey: 'r', arguments: { 'x-max-priority': 4 } }]],
    });
    expect(config.defaultPriority).toBe(3);
    expect(config.worker.detectQuorumQueues).toBe(false);
    expect(config.routing.routers).toHaveLength(1);
  });

  it('uses per-consumer QoS only when a configured queue is quorum and detection is on (Celery 5.7)', () => {
    expect(perConsumerQos(normalizeCeleryOptions({}))).toBe(false);
    expect(perConsumerQos(normalizeCeleryOptions({ queueType: 'quorum' }))).toBe(true);
    // task_default_queue_type applies only without task_queues, as in Celery
    expect(perConsumerQos(normalizeCeleryOptions({ queueType: 'quorum', taskQueues: { a: {} } }))).toBe(false);
    expect(perConsumerQos(normalizeCeleryOptions({ taskQueues: { a: { arguments: { 'x-queue-type': 'quorum' } } } }))).toBe(true);
    // a worker queue created as missing with task_create_missing_queue_type
    expect(perConsumerQos(normalizeCeleryOptions({ createMissingQueueType: 'quorum', worker: { queues: ['other'] } }))).toBe(true);
  });

  it('gives every module configuration its own queue table, shared by the broker, producer and worker', () => {
    const config = normalizeCeleryOptions({});
    expect(queueTableOf(config)).toBe(queueTableOf(config));
    expect(queueTableOf(normalizeCeleryOptions({}))).not.toBe(queueTableOf(config));
  });

  it.each([
    [{ queueMaxPriority: 0 }, 'queueMaxPriority', /1-255/],
    [{ task_queue_max_priority: 256 }, 'queueMaxPriority', /1-255/],
    [{ queueType: 'stream' }, 'queueType', /'classic', 'quorum'/],
    [{ defaultExchangeType: 'x-delayed-message' }, 'defaultExchangeType', /'direct', 'topic', 'fanout', 'headers'/],
    [{ taskQueues: { a: { exchnage: 'x' } } }, 'taskQueues.a.exchnage', /unknown option/],
    [{ taskQueues: { a: { arguments: { 'x-queue-type': 'stream' } } } }, 'taskQueues.a.arguments', /x-queue-type/],
    [{ taskQueues: 'a' }, 'taskQueues', /must be an object/],
    [{ taskRoutes: 5 }, 'taskRoutes', /must be an object/],
    [{ defaultPriority: 300 }, 'defaultPriority', /0-255/],
    [{ worker: { consumerTimeoutMs: -1 } }, 'worker.consumerTimeoutMs', />= 0/],
  ])('rejects %j, naming %s', (input, key, detail) => {
    const err = configError(input);
    expect(err.key).toBe(key);
    expect(err.message).toMatch(detail);
  });

  it('refuses worker.detectQuorumQueues false with a quorum queue: RabbitMQ closes the connection on global QoS there', () => {
    expect(configError({ queueType: 'quorum', worker: { detectQuorumQueues: false } }).message).toMatch(/worker\.detectQuorumQueues: is false but celery is a quorum queue.*540 NOT_IMPLEMENTED/);
    expect(normalizeCeleryOptions({ worker: { detectQuorumQueues: false } }).worker.detectQuorumQueues).toBe(false);
  });

  it('names the celeryconfig key the user wrote', () => {
    expect(configError({ task_default_queue_type: 'stream' }).message).toMatch(/^Invalid nestjs-celery configuration: task_default_queue_type \(queueType\)/);
  });
});
