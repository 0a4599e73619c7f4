import type { LoggerService } from '@nestjs/common';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { AMQP_URL } from '../support/real-services';

/**
 * Helpers for the Astra suite's security checks: every line the library logs is captured, and
 * each known secret (the `AstraCS:` token, Cassandra passwords, the broker password) is looked for
 * in the logs, in a child process's output and in every thrown error.
 */

/** A Nest LoggerService that keeps every line, at every level, with its context and extra arguments. */
export class CapturingLogger implements LoggerService {
  readonly lines: string[] = [];

  log(message: unknown, ...rest: unknown[]): void {
    this.keep('log', message, rest);
  }
  error(message: unknown, ...rest: unknown[]): void {
    this.keep('error', message, rest);
  }
  warn(message: unknown, ...rest: unknown[]): void {
    this.keep('warn', message, rest);
  }
  debug(message: unknown, ...rest: unknown[]): void {
    this.keep('debug', message, rest);
  }
  verbose(message: unknown, ...rest: unknown[]): void {
    this.keep('verbose', message, rest);
  }
  fatal(message: unknown, ...rest: unknown[]): void {
    this.keep('fatal', message, rest);
  }

  text(): string {
    return this.lines.join('\n');
  }

  private keep(level: string, message: unknown, rest: unknown[]): void {
    this.lines.push([level, ...[message, ...rest].map(textOf)].join(' '));
  }
}

/** Everything an error or value shows when printed: message, stack, cause chain, own properties. */
export function textOf(value: unknown): string {
  if (typeof value === 'string') return value;
  const parts = [inspect(value, { depth: 8, breakLength: Infinity })];
  for (let e: unknown = value, n = 0; e instanceof Error && n < 8; e = (e as Error & { cause?: unknown }).cause, n++) {
    parts.push(String(e.message), String(e.stack));
  }
  return parts.join('\n');
}

/** Fails naming the secret (by label, not value) if any of `secrets` occurs in `text`, case-insensitively. */
export function expectNoSecrets(where: string, text: string, secrets: Record<string, string>): void {
  const lower = text.toLowerCase();
  const leaked = Object.entries(secrets)
    .filter(([, secret]) => secret && lower.includes(secret.toLowerCase()))
    .map(([label]) => label);
  if (leaked.length) throw new Error(`${where} reveals ${leaked.join(', ')}`);
}

/**
 * A RabbitMQ user of its own with a random password, so a leak of the broker password is
 * detectable (the default `guest` is an ordinary word in a masked URL). Made with rabbitmqctl, as
 * the fault suite drives the broker; deleted at the end.
 */
export class BrokerUser {
  readonly username = `astra_test_${randomBytes(4).toString('hex')}`;
  readonly password = `brokerPw-${randomBytes(16).toString('hex')}`;

  get url(): string {
    const url = new URL(AMQP_URL);
    url.username = this.username;
    url.password = this.password;
    return url.toString().replace(/\/$/, '');
  }

  create(): void {
    rabbitmqctl('add_user', this.username, this.password);
    const path = new URL(AMQP_URL).pathname;
    const vhost = path && path !== '/' ? decodeURIComponent(path.slice(1)) : '/';
    rabbitmqctl('set_permissions', '-p', vhost, this.username, '.*', '.*', '.*');
  }

  remove(): void {
    rabbitmqctl('delete_user', this.username);
  }
}

function rabbitmqctl(...args: string[]): void {
  execFileSync('rabbitmqctl', args, {
    stdio: 'pipe',
    env: { ...process.env, RABBITMQ_NODENAME: process.env.RABBITMQ_NODENAME ?? 'rabbit@localhost', PATH: `${process.env.PATH}:/usr/sbin:/sbin` },
  });
}
