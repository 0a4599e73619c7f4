import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const exec = promisify(execFile);

/** The test node of `scripts/services.sh`. */
const NODE = process.env.RABBITMQ_NODENAME ?? 'rabbit@localhost';

/** `rabbitmqctl -n <node> <args>` on the test node; resolves its stdout. */
export async function rabbitmqctl(...args: string[]): Promise<string> {
  const { stdout } = await exec('rabbitmqctl', ['-n', NODE, ...args], {
    env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` },
    timeout: 60000,
  });
  return stdout;
}

/** Evaluates an Erlang expression on the test node (`rabbitmqctl eval`). */
export function rabbitEval(expression: string): Promise<string> {
  return rabbitmqctl('eval', expression);
}

/**
 * Runs `fn` while the test node closes any channel that keeps a delivery unacknowledged for longer
 * than `timeoutMs` (RabbitMQ's `consumer_timeout`, 30 minutes by default), checked every 500 ms
 * instead of once a minute (`channel_tick_interval` — read when a channel opens, so only channels
 * opened inside `fn` see the fast check). Both settings are node-wide: hold the services lock,
 * and they are put back to RabbitMQ's defaults in `finally`, whatever `fn` does.
 */
export async function withConsumerTimeout<T>(timeoutMs: number, fn: () => Promise<T>): Promise<T> {
  await rabbitEval(`application:set_env(rabbit, consumer_timeout, ${Math.round(timeoutMs)}), application:set_env(rabbit, channel_tick_interval, 500).`);
  try {
    return await fn();
  } finally {
    await rabbitEval('application:set_env(rabbit, consumer_timeout, 1800000), application:set_env(rabbit, channel_tick_interval, 60000).');
  }
}

/** Closes every client connection of the test node (as a network fault would, but with a reason the clients log). Hold the services lock. */
export async function closeConnections(reason: string): Promise<void> {
  await rabbitEval(`[rabbit_networking:close_connection(Pid, "${reason}") || Pid <- rabbit_networking:connections()], ok.`);
}
