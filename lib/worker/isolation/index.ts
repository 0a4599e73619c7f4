export { IsolatedPool } from './isolated-pool';
export type { IsolatedPoolOptions, IsolatedRun, IsolatedRunOptions, IsolatedPoolStats } from './isolated-pool';
export type { IsolatedTaskSpec } from './protocol';
export { isolatedTaskContext } from './thread-context';
export type { IsolatedTaskContext } from './thread-context';
export { checkIsolatedSpec } from './locate';
export { IsolatedPoolClosedError, SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError } from './errors';
