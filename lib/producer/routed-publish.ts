import type { Logger } from '@nestjs/common';
import type { Broker, OutgoingMessage } from '../broker/broker.interface';
import { CeleryBrokerRefusedError } from '../errors/celery.errors';
import { delayedDeliveryBindings, delayedDeliveryTopology, type Destination, type QueueTable } from '../protocol/routing';

/**
 * Publishes a task message where `routeTask` / `retryDestination` sent it: the destination queue
 * declared first (Celery's `declare=[queue]`), then the exchange and routing key. Resolves once
 * the broker has confirmed it.
 *
 * For a delayed destination, beyond Celery (whose producer declares nothing and gets a 404 when no
 * worker has declared the topology yet): the native delayed-delivery topology is declared once
 * per connection, and the destination queue and its binding to `celery_delayed_delivery`, so the
 * message is neither refused nor stuck in the last delay queue. A refused declaration (the
 * topology exists with other arguments, e.g. classic delay queues) is logged and the publish goes on.
 */
export async function publishRouted(broker: Broker, table: QueueTable, destination: Destination, message: OutgoingMessage, logger: Pick<Logger, 'warn'>): Promise<void> {
  if (destination.delayed) {
    try {
      await broker.declareTopology(delayedDeliveryTopology(table.settings.delayedDeliveryQueueType), 'native delayed delivery');
      if (destination.queue) {
        await broker.assertQueue(destination.queue.name);
        await broker.declareTopology(delayedDeliveryBindings([destination.queue]), `native delayed delivery bindings of ${destination.queue.name}`);
      }
    } catch (err) {
      if (!(err instanceof CeleryBrokerRefusedError)) throw err;
      logger.warn(`${err.message}; publishing through the existing topology`);
    }
  }
  await broker.publish(destination.declare?.name ?? destination.queue?.name ?? '', message, { exchange: destination.exchange, routingKey: destination.routingKey });
}
