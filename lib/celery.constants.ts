export const TASK_METADATA = 'nestjs-celery:task';
export const CELERY_CONFIG = Symbol('CELERY_CONFIG');
export const TASK_CONTEXT_PARAM = 'nestjs-celery:task-context-param';
export const PERIODIC_METADATA = 'nestjs-celery:periodic';
