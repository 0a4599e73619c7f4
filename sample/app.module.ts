import { DynamicModule, Module } from '@nestjs/common';
import { APP_GUARD, APP_INTERCEPTOR } from '@nestjs/core';
import { CeleryModule } from '../lib';
import { sampleOptions, untrustedOrigins } from './sample.config';
import { SortClient } from './sort.client';
import { TaskTimingInterceptor } from './task-timing.interceptor';
import { TasksService } from './tasks.service';
import { TrustedOriginGuard } from './trusted-origin.guard';
import { SampleHttpModule } from './http.module';

@Module({})
export class AppModule {
  /** `http`: the worker's /health and /metrics (sample/http.module.ts). */
  static register(workerEnabled: boolean, http = false): DynamicModule {
    return {
      module: AppModule,
      imports: [CeleryModule.forRoot(sampleOptions(process.env, workerEnabled, http)), ...(http ? [SampleHttpModule] : [])],
      providers: [
        TasksService,
        SortClient,
        // global enhancers apply to tasks as to any Nest handler; tasks.registerUser adds its own ValidationPipe
        { provide: APP_INTERCEPTOR, useClass: TaskTimingInterceptor },
        { provide: APP_GUARD, useFactory: () => new TrustedOriginGuard(untrustedOrigins(process.env)) },
      ],
    };
  }
}
