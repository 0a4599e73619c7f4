import { ConfigurableModuleBuilder } from '@nestjs/common';
import type { CeleryOptionsInput } from './interfaces/celery-options.interface';

export const {
  ConfigurableModuleClass: CeleryConfigurableModule,
  MODULE_OPTIONS_TOKEN: CELERY_MODULE_OPTIONS,
  OPTIONS_TYPE: CELERY_OPTIONS_TYPE,
  ASYNC_OPTIONS_TYPE: CELERY_ASYNC_OPTIONS_TYPE,
} = new ConfigurableModuleBuilder<CeleryOptionsInput>()
  .setClassMethodName('forRoot')
  .setExtras({ isGlobal: true }, (definition, extras) => ({ ...definition, global: extras.isGlobal }))
  .build();
