import { serverWantsPerConsumerQos } from '../../../lib/broker/amqp.broker';

describe('AmqpBroker QoS mode from the server version (kombu 5.7 qos_semantics_matches_spec)', () => {
  it.each([
    ['3.10.8', false],
    ['3.13.7', false],
    ['4.0.0', true],
    ['4.3.1', true],
    ['', false],
    [undefined, false],
  ])('RabbitMQ %s → per-consumer %s', (version, expected) => {
    expect(serverWantsPerConsumerQos(version)).toBe(expected);
    if (typeof version === 'string') expect(serverWantsPerConsumerQos(Buffer.from(version))).toBe(expected);
  });
});
