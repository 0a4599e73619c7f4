/**
 * CPU seconds spent by each party of a run — the worker process tree, the producer (this process),
 * RabbitMQ (beam.smp) and Cassandra (its JVM) — read from /proc around a phase, so the cost of a
 * task can be split by where it is paid. On a 2-core machine the sum is what limits throughput.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { processTree, round } from './common';

export interface CpuSeconds {
  worker: number;
  producer: number;
  rabbitmq: number;
  cassandra: number;
}

let clockTicks: number | null = null;
function ticksPerSecond(): number {
  if (clockTicks === null) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** utime + stime of one process, in seconds (0 when it is gone). */
function processCpu(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // fields after the command (which may hold spaces) start after the last ')'
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
  } catch {
    return 0;
  }
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

/** The pids of RabbitMQ's Erlang VM and Cassandra's JVM on this machine. */
export function servicePids(): { rabbitmq: number[]; cassandra: number[] } {
  const out = { rabbitmq: [] as number[], cassandra: [] as number[] };
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmd = cmdline(Number(entry));
    if (/beam\.smp/.test(cmd) && /rabbit/.test(cmd)) out.rabbitmq.push(Number(entry));
    else if (/java/.test(cmd) && /CassandraDaemon/.test(cmd)) out.cassandra.push(Number(entry));
  }
  return out;
}

/** CPU seconds of every party from `start()` to `stop()`. */
export class CpuMeter {
  private before: CpuSeconds | null = null;
  private readonly services = servicePids();

  constructor(private readonly workerRoots: number[]) {}

  private read(): CpuSeconds {
    const sum = (pids: number[]) => pids.reduce((s, p) => s + processCpu(p), 0);
    const own = process.cpuUsage();
    return {
      worker: sum(processTree(this.workerRoots)),
      producer: (own.user + own.system) / 1e6,
      rabbitmq: sum(this.services.rabbitmq),
      cassandra: sum(this.services.cassandra),
    };
  }

  start(): void {
    this.before = this.read();
  }

  /** CPU seconds per `per` tasks, given the tasks the phase ran. */
  stop(tasks: number, per = 10_000): CpuSeconds {
    const after = this.read();
    const before = this.before ?? after;
    const scale = per / tasks;
    return {
      worker: round((after.worker - before.worker) * scale, 2),
      producer: round((after.producer - before.producer) * scale, 2),
      rabbitmq: round((after.rabbitmq - before.rabbitmq) * scale, 2),
      cassandra: round((after.cassandra - before.cassandra) * scale, 2),
    };
  }
}

/** One line: the CPU seconds per 10,000 tasks by party, and their sum. */
export function describeCpu(cpu: CpuSeconds): string {
  const total = round(cpu.worker + cpu.producer + cpu.rabbitmq + cpu.cassandra, 2);
  return `CPU-s per 10,000 tasks: worker ${cpu.worker}, producer ${cpu.producer}, RabbitMQ ${cpu.rabbitmq}, Cassandra ${cpu.cassandra} (total ${total})`;
}
