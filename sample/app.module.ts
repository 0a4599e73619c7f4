import { DynamicModule, Module } from '@nestjs/common';
import { CeleryModule } from '../lib';
import { sampleOptions } from './sample.config';
import { SortClient } from './sort.client';
import { TasksService } from './tasks.service';
import { SampleHttpModule } from './http.module';

@Module({})
export class AppModule {
  /** `http`: the worker's /health and /metrics (sample/http.module.ts). */
  static register(workerEnabled: boolean, http = false): DynamicModule {
    return {
      module: AppModule,
      imports: [CeleryModule.forRoot(sampleOptions(process.env, workerEnabled, http)), ...(http ? [SampleHttpModule] : [])],
      providers: [TasksService, SortClient],
    };
  }
}
