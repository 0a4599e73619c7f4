export const TASK_METADATA = 'nestjs-celery:task';
export const CELERY_CONFIG = Symbol('CELERY_CONFIG');
