import { Injectable } from '@nestjs/common';
import { CUSTOM_ROUTE_ARGS_METADATA, EXCEPTION_FILTERS_METADATA, GUARDS_METADATA, INTERCEPTORS_METADATA, PIPES_METADATA } from '@nestjs/common/constants';
import { RouteParamtypes } from '@nestjs/common/enums/route-paramtypes.enum';
import type { ExecutionContext } from '@nestjs/common';
import { ApplicationConfig, ExternalContextCreator } from '@nestjs/core';
import type { ParamsFactory } from '@nestjs/core/helpers/external-context-creator';
import { isObservable, lastValueFrom } from 'rxjs';
import type { TaskContext } from '../decorators/task-context.decorator';
import { TaskRegistrationError } from '../errors/celery.errors';
import type { ParameterList } from '../discovery/parameter-names';
import { CELERY_CONTEXT_TYPE, TaskPayload } from './celery-execution-context';
import { taskErrorOf } from './enhancer-errors';

/** Runs a task through its guards, interceptors, pipes and filters; `bound` are its arguments bound to its parameters (no context). */
export type EnhancedTaskHandler = (context: TaskContext, bound: unknown[]) => Promise<unknown>;

/** A `@Task()` method, as the explorer found it. */
export interface TaskMethod {
  instance: object;
  methodName: string;
  method: Function;
  /** The parameters callers bind to (the `@TaskContext()` one left out). */
  params: ParameterList;
  contextIndex: number | null;
  /** `ClassName.methodName`, for errors. */
  target: string;
}

/** Where the pipes' parameter metadata of a task method lives (read by ExternalContextCreator). */
const TASK_ARGS_METADATA = '__celeryTaskArgs__';

/** The bound arguments of a call, found from the payload the execution context carries. */
const boundArguments = new WeakMap<TaskPayload, unknown[]>();

/**
 * Applies Nest's enhancers (`@UseGuards`, `@UseInterceptors`, `@UsePipes`, `@UseFilters`, on the
 * method, its class or globally) to `@Task()` methods through Nest's ExternalContextCreator, with
 * the execution context type `'celery'`. A task that none applies to is not wrapped at all.
 */
@Injectable()
export class TaskEnhancers {
  constructor(private readonly contextCreator: ExternalContextCreator) {}

  /** The enhanced call of a task method, or null when no enhancer applies (the worker then calls the method itself). */
  wrap(task: TaskMethod): EnhancedTaskHandler | null {
    const applying = this.applying(task);
    if (!applying) return null;
    if (task.params.restIndex !== null) {
      throw new TaskRegistrationError(
        `${task.target}: guards, interceptors, pipes or filters apply to it, but it has a rest parameter, which pipes cannot receive one value for; give it an array parameter instead`,
      );
    }
    const labels = defineParameterMetadata(task);
    const proxy = this.contextCreator.create(
      task.instance,
      task.method as (...args: unknown[]) => unknown,
      task.methodName,
      TASK_ARGS_METADATA,
      paramsFactoryOf(labels),
      undefined,
      undefined,
      // without filters, Nest's fallback filter would log every error (retries included) a second time
      { guards: true, interceptors: true, filters: applying.filters },
      CELERY_CONTEXT_TYPE,
    );
    return async (context, bound) => {
      const payload: TaskPayload = { args: context.args, kwargs: context.kwargs };
      boundArguments.set(payload, bound);
      try {
        // a filter may return an Observable (as RPC filters do) or a Promise: its value is the task's result
        const out: unknown = await proxy(payload, context);
        return isObservable(out) ? await lastValueFrom(out) : out;
      } catch (err) {
        throw taskErrorOf(err, context);
      }
    };
  }

  /**
   * An isolated task runs in a worker thread, where Nest's enhancers cannot follow it: one declared
   * on the method or its class would silently not run (a guard not guarding), so it is refused.
   * Global ones do not apply to isolated tasks (documented).
   */
  refuseOnIsolated(task: Pick<TaskMethod, 'instance' | 'method' | 'target'>): void {
    const kinds = ENHANCER_KEYS.filter((key) => declaredOn(task, key));
    if (kinds.length === 0) return;
    throw new TaskRegistrationError(
      `${task.target}: isolate: 'thread' runs the task in a worker thread, where ${kinds.map((k) => ENHANCER_NAMES[k]).join(', ')} cannot run; remove them or the isolation`,
    );
  }

  /** Whether any enhancer applies to the method (declared on it or its class, or global); null when none does. */
  private applying(task: TaskMethod): { filters: boolean } | null {
    const config = this.applicationConfig();
    // without the application's config (another Nest version), assume globals may apply: correct, only slower
    const global = (list: (c: ApplicationConfig) => unknown[]) => (config ? list(config).length > 0 : true);
    const filters = declaredOn(task, EXCEPTION_FILTERS_METADATA) || global((c) => c.getGlobalFilters());
    const others =
      declaredOn(task, GUARDS_METADATA) ||
      declaredOn(task, INTERCEPTORS_METADATA) ||
      declaredOn(task, PIPES_METADATA) ||
      global((c) => c.getGlobalGuards()) ||
      global((c) => c.getGlobalInterceptors()) ||
      global((c) => c.getGlobalPipes());
    return filters || others ? { filters } : null;
  }

  /**
   * The global enhancers (`app.useGlobalPipes()`, `APP_PIPE` providers, ...) live in the container's
   * ApplicationConfig, which Nest does not export as a provider; ExternalContextCreator holds the container.
   */
  private applicationConfig(): ApplicationConfig | null {
    const container = (this.contextCreator as unknown as { container?: { applicationConfig?: unknown } }).container;
    const config = container?.applicationConfig;
    return config instanceof ApplicationConfig ? config : null;
  }
}

const ENHANCER_NAMES: Record<string, string> = {
  [GUARDS_METADATA]: '@UseGuards()',
  [INTERCEPTORS_METADATA]: '@UseInterceptors()',
  [PIPES_METADATA]: '@UsePipes()',
  [EXCEPTION_FILTERS_METADATA]: '@UseFilters()',
};
const ENHANCER_KEYS = Object.keys(ENHANCER_NAMES);

/** Whether `@Use*()` of this kind is on the method or its class. */
function declaredOn(task: Pick<TaskMethod, 'instance' | 'method'>, key: string): boolean {
  return hasAny(Reflect.getMetadata(key, task.method)) || hasAny(Reflect.getMetadata(key, task.instance.constructor));
}

function hasAny(value: unknown): boolean {
  return Array.isArray(value) && value.length > 0;
}

/**
 * Declares every parameter of the method for the pipes: each bound parameter as a `'body'` whose
 * `data` is its name (its position when it has none), and the `@TaskContext()` one as a `'custom'`
 * parameter (ValidationPipe leaves those alone). Returns the label of each bound parameter.
 */
function defineParameterMetadata(task: TaskMethod): (string | undefined)[] {
  const metadata: Record<string, { index: number; data: string | undefined; pipes: unknown[]; factory?: unknown }> = {};
  const labels = task.params.names.map((name, i) => name ?? String(i));
  labels.forEach((label, i) => {
    const index = task.contextIndex !== null && i >= task.contextIndex ? i + 1 : i;
    metadata[`${RouteParamtypes.BODY}:${index}`] = { index, data: label, pipes: [] };
  });
  if (task.contextIndex !== null) {
    const factory = (_data: unknown, ctx: ExecutionContext) => ctx.getArgByIndex<TaskContext>(1);
    metadata[`${CUSTOM_ROUTE_ARGS_METADATA}:${task.contextIndex}`] = { index: task.contextIndex, data: undefined, pipes: [], factory };
  }
  Reflect.defineMetadata(TASK_ARGS_METADATA, metadata, task.instance.constructor, task.methodName);
  return labels;
}

/** Gives each parameter its bound value: the execution context's first argument is the call's payload. */
function paramsFactoryOf(labels: (string | undefined)[]): ParamsFactory {
  const positions = new Map(labels.map((label, i) => [label, i]));
  return {
    exchangeKeyForValue(_type: number, data: unknown, args: unknown[]): unknown {
      const bound = boundArguments.get(args[0] as TaskPayload) ?? [];
      return bound[positions.get(data as string) ?? -1];
    },
  };
}
