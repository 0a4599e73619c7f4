import { CallHandler, ExecutionContext, Injectable, NestInterceptor } from '@nestjs/common';
import { APP_GUARD, APP_INTERCEPTOR } from '@nestjs/core';
import { Test, TestingModule } from '@nestjs/testing';
import type { Client } from 'cassandra-driver';
import { map, Observable } from 'rxjs';
import { CeleryExecutionContext, CeleryModule, Producer } from '../../lib';
import { encodeTaskMessage } from '../../lib/protocol/task-message';
import { TasksService } from '../../sample/tasks.service';
import { TrustedOriginGuard } from '../../sample/trusted-origin.guard';
import { eventually, KEYSPACE, RawAmqp, rawCassandra, realOptions, removeQueueAndTable, uniqueName } from '../support/real-services';

/** Wraps tasks.add's sum in an object naming the task: a result only an interceptor could have made. */
@Injectable()
class WrapAddResult implements NestInterceptor {
  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const task = CeleryExecutionContext.create(context).getTask();
    if (task.name !== 'tasks.add') return next.handle();
    return next.handle().pipe(map((sum) => ({ task: task.name, sum })));
  }
}

interface Row {
  status: string;
  result: { exc_type?: string; exc_module?: string; exc_message?: unknown[] } & Record<string, unknown>;
  traceback: string | null;
}

/**
 * The sample's guard and ValidationPipe, and an interceptor, on the real RabbitMQ and Cassandra:
 * what each one makes of a task is read back from Cassandra's rows, as Python's backend reads them.
 */
describe('guards, interceptors and pipes on tasks (RabbitMQ + Cassandra)', () => {
  const queue = uniqueName('it_enh');
  const table = uniqueName('it_enh');
  let app: TestingModule;
  let producer: Producer;
  let cql: Client;
  let amqp: RawAmqp;

  async function rows(taskId: string): Promise<Row[]> {
    const rs = await cql.execute(`SELECT status, result, traceback FROM ${KEYSPACE}.${table} WHERE task_id = ?`, [taskId], { prepare: true });
    return rs.rows.map((r) => ({ status: r.status as string, result: JSON.parse(String(r.result)), traceback: r.traceback === null ? null : String(r.traceback) }));
  }

  /** Publishes as Python's Celery does (exchange = routing key = queue), from the origin given. */
  function publishFrom(origin: string, task: string, args: unknown[], kwargs: Record<string, unknown> = {}): string {
    const id = uniqueName('enh');
    const m = encodeTaskMessage({ task, id, args, kwargs }, { nowMicros: Date.now() * 1000, origin });
    amqp.channel.publish(queue, queue, m.body, { ...m.properties, headers: m.amqpHeaders });
    return id;
  }

  beforeAll(async () => {
    cql = await rawCassandra();
    amqp = await RawAmqp.open();
    app = await Test.createTestingModule({
      imports: [CeleryModule.forRoot(realOptions(queue, table, { worker: { hostname: 'it@enhancers' } }))],
      providers: [
        TasksService,
        { provide: APP_GUARD, useValue: new TrustedOriginGuard(['untrusted-host']) },
        { provide: APP_INTERCEPTOR, useClass: WrapAddResult },
      ],
    }).compile();
    await app.init();
    producer = app.get(Producer);
  });

  afterAll(async () => {
    await app?.close();
    await amqp?.close();
    await cql?.shutdown();
    await removeQueueAndTable(queue, table);
  });

  it("a kwarg the ValidationPipe rejects is one FAILURE row, ValueError naming each field, and the message is not requeued", async () => {
    const r = await producer.sendTask('tasks.registerUser', { kwargs: { user: { email: 'nope', name: 'Ada', age: 9 } } });
    await expect(r.get({ timeout: 10000 })).rejects.toMatchObject({ excType: 'ValueError', excModule: 'builtins' });
    const stored = await rows(r.id);
    expect(stored.map((s) => s.status)).toEqual(['FAILURE']);
    expect(stored[0].result.exc_type).toBe('ValueError');
    expect(stored[0].result.exc_module).toBe('builtins');
    expect(stored[0].result.exc_message).toEqual([`tasks.registerUser[${r.id}] got invalid arguments: email must be an email; age must not be less than 13`]);
    expect(stored[0].traceback).toContain('InvalidTaskArgumentsError');
    expect(await amqp.depth(queue)).toBe(0);
  });

  it('a valid kwarg passes the pipe and the task runs', async () => {
    const r = await producer.sendTask('tasks.registerUser', { kwargs: { user: { email: 'Ada@Example.com', name: 'Ada', age: 36 } } });
    await expect(r.get({ timeout: 10000 })).resolves.toEqual({ registered: 'ada@example.com', name: 'Ada', age: 36 });
  });

  it('a task from an untrusted origin is one FAILURE row, PermissionError, and is not retried; the same task from elsewhere runs', async () => {
    const refused = publishFrom('gen4242@untrusted-host', 'tasks.sortWords', ['b a']);
    const trusted = publishFrom('gen4242@python-host', 'tasks.sortWords', ['b a']);
    await eventually(async () => (await rows(refused)).length > 0 && (await rows(trusted)).length > 0, 15000);
    const [row] = await rows(refused);
    expect(row.status).toBe('FAILURE');
    expect(row.result).toEqual({ exc_type: 'PermissionError', exc_module: 'builtins', exc_message: [`tasks.sortWords[${refused}] refused: Forbidden resource`] });
    expect((await rows(trusted)).map((s) => [s.status, s.result])).toEqual([['SUCCESS', 'a b']]);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await rows(refused)).toHaveLength(1);
    expect(await amqp.depth(queue)).toBe(0);
  });

  it("an interceptor's transformed result is what the SUCCESS row holds", async () => {
    const r = await producer.sendTask('tasks.add', { args: [2, 40] });
    await expect(r.get({ timeout: 10000 })).resolves.toEqual({ task: 'tasks.add', sum: 42 });
    const stored = await rows(r.id);
    expect(stored.map((s) => [s.status, s.result])).toEqual([['SUCCESS', { task: 'tasks.add', sum: 42 }]]);
  });
});
