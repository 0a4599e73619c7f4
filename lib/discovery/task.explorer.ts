import { Injectable, OnModuleInit } from '@nestjs/common';
import { DiscoveryService, MetadataScanner } from '@nestjs/core';
import { TaskRegistrationError } from '../errors/celery.errors';
import { TASK_CONTEXT_PARAM } from '../celery.constants';
import { CeleryTaskContext } from '../worker/task-context';
import { checkIsolatedSpec } from '../worker/isolation/locate';
import type { IsolatedTaskSpec } from '../worker/isolation/protocol';
import { validateTaskOptions } from '../decorators/task.decorator';
import { ParameterList, parameterNames } from './parameter-names';
import { TaskEnhancers } from '../enhancers/task-enhancers';
import { TaskMetadataAccessor, taskNameOf } from './task-metadata.accessor';
import { TaskRegistry } from './task.registry';

/** Walks every provider at bootstrap and registers its `@Task()` methods. */
@Injectable()
export class TaskExplorer implements OnModuleInit {
  constructor(
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    private readonly accessor: TaskMetadataAccessor,
    private readonly registry: TaskRegistry,
    private readonly enhancers: TaskEnhancers,
  ) {}

  onModuleInit(): void {
    this.explore();
  }

  explore(): void {
    for (const wrapper of this.discovery.getProviders()) {
      if (injectsTaskContext(wrapper.metatype)) this.registry.contextAccessorUsed = true;
      const instance = wrapper.instance as Record<string, unknown> | undefined;
      if (!instance || typeof instance !== 'object' || !wrapper.isDependencyTreeStatic()) continue;
      const prototype = Object.getPrototypeOf(instance) as object | null;
      if (!prototype) continue;
      for (const methodName of this.scanner.getAllMethodNames(prototype)) {
        this.registerMethod(instance, methodName);
      }
    }
  }

  private registerMethod(instance: Record<string, unknown>, methodName: string): void {
    const method = instance[methodName];
    if (typeof method !== 'function') return;
    const metadata = this.accessor.getTaskMetadata(method);
    if (!metadata) return;
    const className = instance.constructor?.name ?? 'Anonymous';
    const name = taskNameOf(className, metadata);
    if (!name.trim()) throw new TaskRegistrationError(`${className}.${methodName}: task name must not be empty`);
    const contextIndex = Reflect.getMetadata(TASK_CONTEXT_PARAM, instance, methodName) as number | undefined;
    const params = metadata.params ? { names: [...metadata.params], restIndex: null } : withoutParameter(parameterNames(method), contextIndex);
    validateTaskOptions(`${className}.${methodName}`, metadata);
    const isolated = metadata.isolate ? isolatedSpecOf(className, methodName, metadata.module as string, instance.constructor, contextIndex) : null;
    const taskMethod = { instance, methodName, method, params, contextIndex: contextIndex ?? null, target: `${className}.${methodName}` };
    if (isolated) this.enhancers.refuseOnIsolated(taskMethod);
    const enhanced = isolated ? null : this.enhancers.wrap(taskMethod);
    this.registry.register({
      name,
      target: `${className}.${methodName}`,
      queue: metadata.queue ?? null,
      ignoreResult: metadata.ignoreResult ?? false,
      params,
      contextIndex: contextIndex ?? null,
      isolated,
      options: metadata,
      handler: (...args: unknown[]) => (method as (...a: unknown[]) => unknown).apply(instance, args),
      enhanced,
    });
  }
}

/** The isolated task's code, checked at bootstrap: the module must export the class under its own name. */
function isolatedSpecOf(className: string, methodName: string, module: string, ctor: Function, contextIndex: number | undefined): IsolatedTaskSpec {
  const target = `${className}.${methodName}`;
  if (contextIndex !== undefined) {
    throw new TaskRegistrationError(`${target}: an isolated task cannot take a @TaskContext() parameter (the context cannot cross into its thread); read it with isolatedTaskContext() inside the task`);
  }
  const spec: IsolatedTaskSpec = { module, exportName: className, method: methodName };
  const problem = checkIsolatedSpec(spec, ctor);
  if (problem) throw new TaskRegistrationError(`${target}: isolate: 'thread': ${problem}`);
  return spec;
}

/** Whether a provider class asks for `CeleryTaskContext` in its constructor or an `@Inject()` property. */
function injectsTaskContext(metatype: unknown): boolean {
  if (typeof metatype !== 'function') return false;
  const ctorTypes = (Reflect.getMetadata('design:paramtypes', metatype) as unknown[] | undefined) ?? [];
  const selfTypes = (Reflect.getMetadata('self:paramtypes', metatype) as { param: unknown }[] | undefined) ?? [];
  const props = (Reflect.getMetadata('self:properties_metadata', metatype) as { type: unknown }[] | undefined) ?? [];
  return [...ctorTypes, ...selfTypes.map((s) => s.param), ...props.map((p) => p.type)].includes(CeleryTaskContext);
}

/** The parameter list without the `@TaskContext()` parameter, which callers do not bind. */
function withoutParameter(params: ParameterList, index: number | undefined): ParameterList {
  if (index === undefined || index >= params.names.length) return params;
  const names = params.names.filter((_, i) => i !== index);
  const restIndex = params.restIndex === null ? null : params.restIndex > index ? params.restIndex - 1 : params.restIndex;
  return { names, restIndex };
}
