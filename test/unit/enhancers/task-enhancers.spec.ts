import {
  ArgumentMetadata,
  ArgumentsHost,
  CallHandler,
  CanActivate,
  Catch,
  ExceptionFilter,
  ExecutionContext,
  Injectable,
  NestInterceptor,
  PipeTransform,
  UseFilters,
  UseGuards,
  UseInterceptors,
  UsePipes,
  ValidationPipe,
} from '@nestjs/common';
import { APP_FILTER, APP_GUARD, APP_INTERCEPTOR, APP_PIPE, ApplicationConfig, ExternalContextCreator } from '@nestjs/core';
import type { Provider } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import { IsEmail, IsInt, Min } from 'class-validator';
import { map, Observable, of, throwError } from 'rxjs';
import {
  CeleryExecutionContext,
  CeleryModule,
  Producer,
  Task,
  TaskContext,
  TaskFailedError,
  TaskRegistrationError,
  TaskRegistry,
} from '../../../lib';
import { IsolatedModuleTasks } from '../worker/fixtures/isolated-module-tasks';
import { GuardedIsolatedTasks } from './fixtures/guarded-isolated-tasks';

class NewUser {
  @IsEmail()
  email!: string;

  @IsInt()
  @Min(18)
  age!: number;
}

/** What each enhancer saw, per test. */
let seen: Record<string, unknown>[] = [];

@Injectable()
class RefuseAll implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const task = CeleryExecutionContext.create(context).getTask();
    seen.push({ guard: context.getType(), task: task.name, data: context.switchToRpc().getData(), origin: context.switchToRpc().getContext<TaskContext>().origin });
    return false;
  }
}

@Injectable()
class Doubling implements NestInterceptor {
  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    seen.push({ interceptor: context.getType(), handler: context.getHandler().name, class: context.getClass().name });
    return next.handle().pipe(map((value) => ({ doubled: (value as number) * 2 })));
  }
}

@Injectable()
class RecordingPipe implements PipeTransform {
  transform(value: unknown, metadata: ArgumentMetadata): unknown {
    seen.push({ pipe: metadata.type, data: metadata.data, metatype: metadata.metatype?.name, value: metadata.type === 'custom' ? 'context' : value });
    return value;
  }
}

class Boom extends Error {}

@Catch(Boom)
class BoomToValue implements ExceptionFilter {
  catch(exception: Boom, host: ArgumentsHost): unknown {
    seen.push({ filter: host.getType(), message: exception.message });
    return of(`recovered from ${exception.message}`);
  }
}

@Catch(Boom)
class BoomToRangeError implements ExceptionFilter {
  catch(exception: Boom): Observable<never> {
    return throwError(() => new RangeError(`mapped: ${exception.message}`));
  }
}

@Injectable()
class MethodLevel {
  @Task('m.refused')
  @UseGuards(RefuseAll)
  refused(x: number): number {
    return x;
  }

  @Task('m.doubled')
  @UseInterceptors(Doubling)
  doubled(x: number): Promise<number> {
    return Promise.resolve(x + 1);
  }

  @Task('m.register')
  @UsePipes(new ValidationPipe({ transform: true }))
  register(user: NewUser, @TaskContext() ctx: TaskContext): string {
    return `${ctx.name}: ${user instanceof NewUser ? 'NewUser' : typeof user} ${user.email} ${user.age}`;
  }

  @Task('m.recorded')
  @UsePipes(RecordingPipe)
  recorded(a: number, @TaskContext() ctx: TaskContext, b = 'default'): string {
    return `${a} ${b} ${ctx.name}`;
  }

  @Task('m.recovered')
  @UseFilters(BoomToValue)
  recovered(): never {
    throw new Boom('kaput');
  }

  @Task('m.mapped')
  @UseFilters(BoomToRangeError)
  mapped(): never {
    throw new Boom('kaput');
  }

  @Task('m.plain')
  plain(a: number, b: number): number {
    return a + b;
  }
}

@Injectable()
@UseInterceptors(Doubling)
class ClassLevel {
  @Task('c.one')
  one(): number {
    return 21;
  }

  @Task('c.two')
  two(x: number): Observable<number> {
    return of(x);
  }
}

@Injectable()
class GlobalLevel {
  @Task('g.echo')
  echo(text: string, @TaskContext() ctx: TaskContext): string {
    return `${ctx.name}: ${text}`;
  }

  @Task('g.throws')
  throws(): never {
    throw new Boom('global');
  }
}

async function moduleWith(providers: Provider[], beforeInit?: (config: ApplicationConfig) => void): Promise<TestingModule> {
  const moduleRef = await Test.createTestingModule({
    imports: [CeleryModule.forRoot({ resultPollIntervalMs: 5 })],
    providers,
  }).compile();
  if (beforeInit) beforeInit(applicationConfigOf(moduleRef));
  await moduleRef.init();
  return moduleRef;
}

/** What `app.useGlobalPipes()` and friends write to (NestApplication delegates to it). */
function applicationConfigOf(moduleRef: TestingModule): ApplicationConfig {
  return (moduleRef.get(ExternalContextCreator) as unknown as { container: { applicationConfig: ApplicationConfig } }).container.applicationConfig;
}

async function failureOf(producer: Producer, name: string, options: { args?: unknown[]; kwargs?: Record<string, unknown> } = {}): Promise<TaskFailedError> {
  const err = await producer
    .sendTask(name, options)
    .then((r) => r.get({ timeout: 3000 }))
    .then(
      (value) => new Error(`expected a FAILURE, got ${JSON.stringify(value)}`),
      (e: unknown) => e,
    );
  expect(err).toBeInstanceOf(TaskFailedError);
  return err as TaskFailedError;
}

async function resultOf(producer: Producer, name: string, options: { args?: unknown[]; kwargs?: Record<string, unknown> } = {}): Promise<unknown> {
  return (await producer.sendTask(name, options)).get({ timeout: 3000 });
}

describe('guards, interceptors, pipes and filters on tasks', () => {
  beforeEach(() => {
    seen = [];
  });

  describe('declared on the method', () => {
    let moduleRef: TestingModule;
    let producer: Producer;
    beforeAll(async () => {
      moduleRef = await moduleWith([MethodLevel]);
      producer = moduleRef.get(Producer);
    });
    afterAll(() => moduleRef.close());

    it('a guard that returns false fails the task with PermissionError naming the task; the guard sees a celery context with the request', async () => {
      const failure = await failureOf(producer, 'm.refused', { args: [1], kwargs: {} });
      expect(failure.excType).toBe('PermissionError');
      expect(failure.excModule).toBe('builtins');
      expect(String(failure.excMessage[0])).toMatch(/^m\.refused\[[0-9a-f-]+\] refused: Forbidden resource$/);
      expect(seen).toEqual([{ guard: 'celery', task: 'm.refused', data: { args: [1], kwargs: {} }, origin: expect.any(String) }]);
    });

    it('an interceptor sees the task and transforms its (Promise) result', async () => {
      await expect(resultOf(producer, 'm.doubled', { args: [20] })).resolves.toEqual({ doubled: 42 });
      expect(seen).toEqual([{ interceptor: 'celery', handler: 'doubled', class: 'MethodLevel' }]);
    });

    it("a ValidationPipe's error fails the task with ValueError naming each field", async () => {
      const failure = await failureOf(producer, 'm.register', { kwargs: { user: { email: 'not-an-email', age: 12 } } });
      expect(failure.excType).toBe('ValueError');
      expect(failure.excModule).toBe('builtins');
      expect(String(failure.excMessage[0])).toMatch(/^m\.register\[[0-9a-f-]+\] got invalid arguments: email must be an email; age must not be less than 18$/);
    });

    it('a ValidationPipe turns a valid keyword argument into its DTO, and the @TaskContext() parameter still gets the request', async () => {
      await expect(resultOf(producer, 'm.register', { kwargs: { user: { email: 'ada@example.com', age: 36 } } })).resolves.toBe('m.register: NewUser ada@example.com 36');
      await expect(resultOf(producer, 'm.register', { args: [{ email: 'ada@example.com', age: 36 }] })).resolves.toBe('m.register: NewUser ada@example.com 36');
    });

    it("a pipe receives each bound parameter as a 'body' named after it (positional or keyword), the context as 'custom'", async () => {
      await expect(resultOf(producer, 'm.recorded', { args: [1], kwargs: { b: 'two' } })).resolves.toBe('1 two m.recorded');
      expect(seen).toEqual(
        expect.arrayContaining([
          { pipe: 'body', data: 'a', metatype: 'Number', value: 1 },
          { pipe: 'body', data: 'b', metatype: 'Object', value: 'two' },
          // its design type is the TaskContext decorator function, which shares the interface's name
          { pipe: 'custom', data: undefined, metatype: 'TaskContext', value: 'context' },
        ]),
      );
      expect(seen).toHaveLength(3);
      // a parameter the caller left out reaches the pipe as undefined, and its default applies
      await expect(resultOf(producer, 'm.recorded', { args: [5] })).resolves.toBe('5 default m.recorded');
    });

    it("a filter's return value (here an Observable) is the task's result: a SUCCESS", async () => {
      await expect(resultOf(producer, 'm.recovered')).resolves.toBe('recovered from kaput');
      expect(seen).toEqual([{ filter: 'celery', message: 'kaput' }]);
    });

    it('a filter that throws (throwError) fails the task with the mapped error', async () => {
      const failure = await failureOf(producer, 'm.mapped');
      expect(failure.excType).toBe('ValueError'); // RangeError's Python counterpart
      expect(failure.excMessage).toEqual(['mapped: kaput']);
    });

    it('a binding error (unknown keyword) is still a TypeError with Python wording', async () => {
      const failure = await failureOf(producer, 'm.recorded', { args: [1], kwargs: { nope: 1 } });
      expect(failure.excType).toBe('TypeError');
      expect(failure.excMessage).toEqual(["m.recorded() got an unexpected keyword argument 'nope'"]);
    });

    it('a task no enhancer applies to is not wrapped (the worker calls the method itself)', async () => {
      const registry = moduleRef.get(TaskRegistry);
      expect(registry.get('m.plain')?.enhanced).toBeNull();
      expect(registry.get('m.refused')?.enhanced).toEqual(expect.any(Function));
      await expect(resultOf(producer, 'm.plain', { args: [2], kwargs: { b: 3 } })).resolves.toBe(5);
    });
  });

  describe('declared on the class', () => {
    let moduleRef: TestingModule;
    let producer: Producer;
    beforeAll(async () => {
      moduleRef = await moduleWith([ClassLevel, MethodLevel]);
      producer = moduleRef.get(Producer);
    });
    afterAll(() => moduleRef.close());

    it("applies to every task of the class, whether it returns a value or an Observable, and not to other classes' tasks", async () => {
      await expect(resultOf(producer, 'c.one')).resolves.toEqual({ doubled: 42 });
      await expect(resultOf(producer, 'c.two', { args: [4] })).resolves.toEqual({ doubled: 8 });
      expect(seen).toEqual([
        { interceptor: 'celery', handler: 'one', class: 'ClassLevel' },
        { interceptor: 'celery', handler: 'two', class: 'ClassLevel' },
      ]);
      expect(moduleRef.get(TaskRegistry).get('m.plain')?.enhanced).toBeNull();
    });
  });

  describe('global (APP_GUARD / APP_INTERCEPTOR / APP_PIPE / APP_FILTER providers)', () => {
    it('an APP_INTERCEPTOR and an APP_PIPE apply to every task', async () => {
      const moduleRef = await moduleWith([GlobalLevel, { provide: APP_INTERCEPTOR, useClass: Doubling }, { provide: APP_PIPE, useClass: RecordingPipe }]);
      try {
        const registry = moduleRef.get(TaskRegistry);
        expect(registry.get('g.echo')?.enhanced).toEqual(expect.any(Function));
        // the interceptor doubles a string into NaN: it ran
        await expect(resultOf(moduleRef.get(Producer), 'g.echo', { args: ['hi'] })).resolves.toEqual({ doubled: NaN });
        expect(seen).toEqual(expect.arrayContaining([{ pipe: 'body', data: 'text', metatype: 'String', value: 'hi' }, { interceptor: 'celery', handler: 'echo', class: 'GlobalLevel' }]));
      } finally {
        await moduleRef.close();
      }
    });

    it('an APP_GUARD refuses every task, an APP_FILTER maps every task', async () => {
      const moduleRef = await moduleWith([GlobalLevel, { provide: APP_GUARD, useClass: RefuseAll }, { provide: APP_FILTER, useClass: BoomToValue }]);
      try {
        const producer = moduleRef.get(Producer);
        expect((await failureOf(producer, 'g.echo', { args: ['hi'] })).excType).toBe('PermissionError');
        // the guard runs before the task: its ForbiddenException is not a Boom, so the filter leaves it alone
        expect((await failureOf(producer, 'g.throws')).excType).toBe('PermissionError');
      } finally {
        await moduleRef.close();
      }
    });

    it('useGlobalPipes / useGlobalFilters (what app.useGlobalPipes() writes) apply as well', async () => {
      const moduleRef = await moduleWith([GlobalLevel], (config) => {
        config.useGlobalPipes(new RecordingPipe());
        config.useGlobalFilters(new BoomToValue());
      });
      try {
        const producer = moduleRef.get(Producer);
        await expect(resultOf(producer, 'g.throws')).resolves.toBe('recovered from global');
        await expect(resultOf(producer, 'g.echo', { kwargs: { text: 'hey' } })).resolves.toBe('g.echo: hey');
        expect(seen).toEqual(expect.arrayContaining([{ pipe: 'body', data: 'text', metatype: 'String', value: 'hey' }]));
      } finally {
        await moduleRef.close();
      }
    });
  });

  it('the fast path: with no enhancer anywhere, ExternalContextCreator is never asked', async () => {
    const create = jest.spyOn(ExternalContextCreator.prototype, 'create');
    try {
      const moduleRef = await moduleWith([GlobalLevel]);
      try {
        expect(moduleRef.get(TaskRegistry).get('g.echo')?.enhanced).toBeNull();
        await expect(resultOf(moduleRef.get(Producer), 'g.echo', { args: ['x'] })).resolves.toBe('g.echo: x');
        expect(create).not.toHaveBeenCalled();
      } finally {
        await moduleRef.close();
      }
    } finally {
      create.mockRestore();
    }
  });

  it('a task with a rest parameter that enhancers apply to is refused at bootstrap, naming it', async () => {
    @Injectable()
    class Rest {
      @Task('r.sum')
      @UsePipes(RecordingPipe)
      sum(...numbers: number[]): number {
        return numbers.reduce((a, b) => a + b, 0);
      }
    }
    await expect(moduleWith([Rest])).rejects.toThrow(TaskRegistrationError);
    await expect(moduleWith([Rest])).rejects.toThrow(/Rest\.sum: .*rest parameter/);
  });

  describe('isolated tasks (their worker thread has no Nest)', () => {
    it('a guard, interceptor, pipe or filter declared on one is refused at bootstrap, naming the task and the decorator', async () => {
      await expect(moduleWith([GuardedIsolatedTasks])).rejects.toThrow(/GuardedIsolatedTasks\.guarded: isolate: 'thread' .* @UseGuards\(\) cannot run/);
    });

    it('global ones do not apply to them: the task runs in its thread, unwrapped', async () => {
      const moduleRef = await moduleWith([IsolatedModuleTasks, { provide: APP_INTERCEPTOR, useClass: Doubling }]);
      try {
        expect(moduleRef.get(TaskRegistry).get('iso.square')?.enhanced).toBeNull();
        await expect(resultOf(moduleRef.get(Producer), 'iso.square', { args: [7] })).resolves.toBe(49);
        expect(seen).toEqual([]);
      } finally {
        await moduleRef.close();
      }
    });
  });

  it('CeleryExecutionContext.create() refuses a context of another type', () => {
    const host = { getType: () => 'http' } as unknown as ArgumentsHost;
    expect(() => CeleryExecutionContext.create(host)).toThrow(/type 'celery'.*got type 'http'/);
  });
});
