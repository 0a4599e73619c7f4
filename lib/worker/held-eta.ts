import type { Delivery, OutgoingMessage } from '../broker/broker.interface';
import { toAmqpFieldTable } from '../protocol/amqp-field-table';
import { markMaybeDuplicate } from '../protocol/task-message';

/**
 * When a held ETA message is moved, as a fraction of RabbitMQ's consumer_timeout after it was
 * delivered: RabbitMQ checks the timeout once a minute by default, so half leaves ample margin.
 */
export const MOVE_AT_FRACTION = 0.5;
/** A move that failed (broker away) is tried again after this fraction of the timeout. */
export const MOVE_RETRY_FRACTION = 0.1;

/**
 * The message of a delivery, to publish again unchanged: same headers, body and properties (its
 * task id, ETA, retries, priority). What a delivery does not carry is left out: the AMQP
 * `expiration` (the `expires` header still revokes the task on time) and RabbitMQ's own `x-`
 * dead-letter headers stay as they came. The copy is marked as one that may have been published
 * before (a crash after the publish and before the ack leaves two): its receiver reads the stored
 * state first.
 */
export function outgoingOf(delivery: Delivery): OutgoingMessage {
  return {
    headers: toAmqpFieldTable(markMaybeDuplicate(delivery.headers ?? {})),
    properties: {
      contentType: delivery.contentType ?? 'application/json',
      contentEncoding: delivery.contentEncoding ?? 'utf-8',
      deliveryMode: 2,
      correlationId: delivery.correlationId ?? '',
      ...(delivery.replyTo ? { replyTo: delivery.replyTo } : {}),
      ...(delivery.priority !== undefined && delivery.priority !== null ? { priority: delivery.priority } : {}),
    },
    body: delivery.body,
  };
}

/** Does the message carry an ETA in its headers (protocol v2)? Only those can be held long. */
export function hasEtaHeader(delivery: Delivery): boolean {
  const eta = delivery.headers?.eta;
  return typeof eta === 'string' && eta.length > 0;
}
