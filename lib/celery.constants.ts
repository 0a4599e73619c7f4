export const TASK_METADATA = 'nestjs-celery:task';
export const CELERY_CONFIG = Symbol('CELERY_CONFIG');
export const TASK_CONTEXT_PARAM = 'nestjs-celery:task-context-param';
/** Optional provider of task events switched by remote control (enable_events / disable_events / heartbeat). */
export const PERIODIC_METADATA = 'nestjs-celery:periodic';
