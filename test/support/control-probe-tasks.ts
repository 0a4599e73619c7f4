import { Injectable } from '@nestjs/common';
import { setTimeout as sleep } from 'node:timers/promises';
import { Task, TaskContext } from '../../lib';

/** Ids of the probe tasks that started running in this process, in order. */
export const probeRuns: string[] = [];

/** Tasks the remote-control specs inspect, revoke and rate-limit. */
@Injectable()
export class ControlProbeTasks {
  /** Waits `ms` (ends early when its signal fires: revoke with terminate). */
  @Task('probe.wait')
  async wait(ms: number, @TaskContext() ctx: TaskContext): Promise<number> {
    probeRuns.push(ctx.id);
    await sleep(ms, undefined, { signal: ctx.signal });
    return ms;
  }

  @Task('probe.add', { rateLimit: '50/s' })
  add(x: number, y: number, @TaskContext() ctx: TaskContext): number {
    probeRuns.push(ctx.id);
    return x + y;
  }
}
