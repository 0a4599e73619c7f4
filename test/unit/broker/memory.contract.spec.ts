import { MemoryBroker } from '../../../lib/broker/memory.broker';
import { defineBrokerContract } from '../../contract/broker-contract';

/** The broker contract on the in-memory broker; the same cases run on RabbitMQ in test/integration/amqp.contract.spec.ts. */
defineBrokerContract('MemoryBroker', () => {
  const brokers: MemoryBroker[] = [];
  let n = 0;
  return {
    async make(options) {
      const broker = new MemoryBroker(options);
      await broker.connect();
      brokers.push(broker);
      return broker;
    },
    queueName: (prefix) => `contract_${prefix}_${++n}`,
    inChannelLossScope: (body) => body(),
    async loseChannel(broker, queue) {
      (broker as MemoryBroker).simulateChannelLoss(queue);
    },
    async deleteQueue(broker, queue) {
      (broker as MemoryBroker).simulateQueueDeletion(queue);
    },
    deliveryTimeoutMs: 1000,
    quietMs: 30,
    async cleanup() {
      await Promise.all(brokers.splice(0).map((b) => b.close()));
    },
  };
});
