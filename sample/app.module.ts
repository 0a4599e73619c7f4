import { DynamicModule, Module } from '@nestjs/common';
import { CeleryModule } from '../lib';
import { sampleOptions } from './sample.config';
import { SortClient } from './sort.client';
import { TasksService } from './tasks.service';

@Module({})
export class AppModule {
  static register(workerEnabled: boolean): DynamicModule {
    return {
      module: AppModule,
      imports: [CeleryModule.forRoot(sampleOptions(process.env, workerEnabled))],
      providers: [TasksService, SortClient],
    };
  }
}
