import { Logger } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { CeleryConnectionError, CeleryModule } from '../../lib';
import { FixtureTasks } from '../support/fixture-tasks';
import { AMQP_URL, CASSANDRA_HOST, CASSANDRA_PORT, KEYSPACE, SUPERUSER, realOptions, uniqueName } from '../support/real-services';

/** An unreachable broker or database, or a missing keyspace, fails startup with an error naming it. */
describe('startup against unreachable or misconfigured services', () => {
  const compile = (options: object) =>
    Test.createTestingModule({ imports: [CeleryModule.forRoot(options)], providers: [FixtureTasks] }).compile();

  it('names the broker (password masked) when RabbitMQ is unreachable', async () => {
    const error = await compile({
      ...realOptions(uniqueName('it_err'), 'unused'),
      brokerUrl: 'amqp://guest:s3cret-pass@127.0.0.1:5699',
      brokerConnectionRetryOnStartup: false,
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CeleryConnectionError);
    expect((error as Error).message).toMatch(/Cannot connect to the broker at amqp:\/\/guest:\*\*\*\*@127\.0\.0\.1:5699/);
    expect((error as Error).message).toContain('ECONNREFUSED');
    expect((error as Error).message).not.toContain('s3cret-pass');
  });

  it('names the broker when the credentials are refused, without the password', async () => {
    const error = await compile({
      ...realOptions(uniqueName('it_err'), 'unused'),
      brokerUrl: AMQP_URL.replace('guest:guest', 'guest:wrong-secret'),
      brokerConnectionRetryOnStartup: false,
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CeleryConnectionError);
    expect((error as Error).message).toMatch(/Cannot connect to the broker at amqp:\/\/guest:\*\*\*\*@/);
    expect((error as Error).message).toMatch(/ACCESS.REFUSED|403/);
    expect((error as Error).message).not.toContain('wrong-secret');
  });

  it('names Cassandra when it is unreachable', async () => {
    const options = realOptions(uniqueName('it_err'), 'unused');
    const error = await compile({ ...options, cassandra: { ...options.cassandra, port: 9049 } }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CeleryConnectionError);
    expect((error as Error).message).toMatch(/Cannot connect to Cassandra 127\.0\.0\.1 port 9049/);
  });

  it('says to create a missing keyspace and does not create it', async () => {
    const missing = uniqueName('no_such_ks');
    const options = realOptions(uniqueName('it_err'), 'unused');
    const error = await compile({ ...options, cassandra: { ...options.cassandra, keyspace: missing } }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CeleryConnectionError);
    expect((error as Error).message).toContain(`Cassandra keyspace "${missing}" does not exist`);
    expect((error as Error).message).toContain('Astra console');
  });

  it('detects the local data center when none is configured', async () => {
    const logs: string[] = [];
    const spy = jest.spyOn(Logger.prototype, 'log').mockImplementation((message: unknown) => void logs.push(String(message)));
    const app = await compile({
      broker_url: AMQP_URL,
      result_backend: 'cassandra://',
      cassandra_servers: [CASSANDRA_HOST],
      cassandra_port: CASSANDRA_PORT,
      cassandra_keyspace: KEYSPACE,
      cassandra_table: 'celery_taskmeta',
      cassandra_auth_provider: 'PlainTextAuthProvider',
      cassandra_auth_kwargs: { ...SUPERUSER },
      worker: { enabled: false },
    });
    spy.mockRestore();
    await app.close();
    expect(logs.some((l) => l.includes('Using Cassandra local data center "datacenter1"'))).toBe(true);
  });
});
