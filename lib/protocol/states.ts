/** Celery's task states (celery/states.py). PENDING is never stored: it means "no row". */
export type TaskState = 'PENDING' | 'RECEIVED' | 'STARTED' | 'RETRY' | 'SUCCESS' | 'FAILURE' | 'REVOKED';

export const READY_STATES: ReadonlySet<string> = new Set(['SUCCESS', 'FAILURE', 'REVOKED']);
export const EXCEPTION_STATES: ReadonlySet<string> = new Set(['RETRY', 'FAILURE', 'REVOKED']);
export const PROPAGATE_STATES: ReadonlySet<string> = new Set(['FAILURE', 'REVOKED']);
