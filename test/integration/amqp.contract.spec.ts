import { AmqpBroker } from '../../lib/broker/amqp.broker';
import { defineBrokerContract } from '../contract/broker-contract';
import { withConsumerTimeout } from '../support/rabbitmq-admin';
import { AMQP_URL, eventually, RawAmqp, uniqueName } from '../support/real-services';

/** RabbitMQ closes a consumer's channel (406 PRECONDITION_FAILED) once a delivery stays unacknowledged this long. */
const CONSUMER_TIMEOUT_MS = 1500;

/**
 * The broker contract on AmqpBroker and the real RabbitMQ: the same cases as MemoryBroker's
 * (test/unit/broker/memory.contract.spec.ts). The channel is lost the way it happens in
 * production: RabbitMQ's consumer_timeout closes the channel of a consumer that holds a message
 * unacknowledged too long.
 */
defineBrokerContract('AmqpBroker on RabbitMQ', () => {
  const brokers: AmqpBroker[] = [];
  const queues: string[] = [];
  return {
    async make(options) {
      const broker = new AmqpBroker({ url: AMQP_URL, retryOnStartup: false, publishTimeoutMs: 10000, queueArguments: options?.queueArguments, queues: options?.queues });
      await broker.connect();
      brokers.push(broker);
      return broker;
    },
    queueName(prefix) {
      const queue = uniqueName(`contract_${prefix}`);
      queues.push(queue);
      return queue;
    },
    inChannelLossScope: (body) => withConsumerTimeout(CONSUMER_TIMEOUT_MS, body),
    async loseChannel(_broker, queue, held) {
      const ms = CONSUMER_TIMEOUT_MS + 5000;
      await eventually(async () => held.every((d) => d.lost.aborted), ms).catch(() => {
        throw new Error(`RabbitMQ did not close the channel of the consumer of ${queue} within ${ms} ms (consumer_timeout ${CONSUMER_TIMEOUT_MS} ms)`);
      });
    },
    async deleteQueue(_broker, queue) {
      const amqp = await RawAmqp.open();
      try {
        await amqp.channel.deleteQueue(queue);
      } finally {
        await amqp.close();
      }
    },
    deliveryTimeoutMs: 5000,
    quietMs: 300,
    async cleanup() {
      await Promise.allSettled(brokers.splice(0).map((b) => b.close()));
      const amqp = await RawAmqp.open();
      try {
        await amqp.deleteQueues(...queues.splice(0));
      } finally {
        await amqp.close();
      }
    },
  };
});
