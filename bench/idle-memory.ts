/**
 * `npm run bench:idle-memory`: what an idle nestjs-celery worker's memory is made of.
 *
 * 1. Modules: a fresh `node` per step loads one more package (`reflect-metadata` first, then
 *    rxjs, @nestjs/common, @nestjs/core, cassandra-driver, amqplib, the optional codecs and
 *    croner, this library) and reports its RSS and V8 heap: what each package costs to load.
 * 2. The worker: the benchmark's worker (bench/nestjs-worker.ts, the library's defaults) started
 *    idle, connected to RabbitMQ and Cassandra, and its /proc/<pid>/smaps split into the Node
 *    binary's pages (file-backed, shared by every Node process on the machine), anonymous memory
 *    (V8's heap and malloc: this process's own) and the rest; PSS and USS of the whole.
 *
 * Needs the services (`npm run services:up`) for step 2. Prints a JSON line per step.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { deleteQueues, startNodeWorkers, stopChild } from './common';

/** This library, as compiled next to the benchmark. */
const LIB = join(__dirname, '..', 'lib');

const STEPS: string[][] = [
  [],
  ['rxjs'],
  ['rxjs', '@nestjs/common'],
  ['rxjs', '@nestjs/common', '@nestjs/core'],
  ['rxjs', '@nestjs/common', '@nestjs/core', 'cassandra-driver'],
  ['rxjs', '@nestjs/common', '@nestjs/core', 'cassandra-driver', 'amqplib'],
  ['rxjs', '@nestjs/common', '@nestjs/core', 'cassandra-driver', 'amqplib', 'fzstd', 'seek-bzip', 'xz-decompress', 'croner'],
  [LIB],
];

const mib = (kb: number) => Math.round(kb / 102.4) / 10;

function moduleStep(mods: string[]): { modules: string; rssMiB: number; heapUsedMiB: number } {
  const script = `require('reflect-metadata'); for (const m of ${JSON.stringify(mods)}) require(m);
    setTimeout(() => { const u = process.memoryUsage(); process.stdout.write(JSON.stringify([u.rss, u.heapUsed])); }, 300);`;
  const [rss, heap] = JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', cwd: join(__dirname, '..', '..') })) as [number, number];
  const label = mods.length === 0 ? 'node + reflect-metadata' : mods.at(-1) === LIB ? '+ this library (all of it)' : `+ ${mods.at(-1)!}`;
  return { modules: label, rssMiB: Math.round(rss / 104857.6) / 10, heapUsedMiB: Math.round(heap / 104857.6) / 10 };
}

/** kB of Rss / Pss / Private_* by kind of mapping. */
function smapsByKind(pid: number): Record<string, Record<string, number>> {
  const by: Record<string, Record<string, number>> = {};
  let kind = 'anonymous';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const path = head[1];
      kind = !path || path === '[heap]' ? 'anonymous (V8 heap, malloc)' : path === process.execPath || /\/node$/.test(path) ? 'node binary (file pages, shared)' : /\.so(\.|$)/.test(path) ? 'shared libraries' : 'other';
      continue;
    }
    const m = /^(Rss|Pss|Private_Clean|Private_Dirty):\s+(\d+)/.exec(line);
    if (m) (by[kind] ??= {})[m[1]] = (by[kind][m[1]] ?? 0) + Number(m[2]);
  }
  return by;
}

async function main(): Promise<void> {
  for (const step of STEPS) process.stdout.write(`${JSON.stringify(moduleStep(step))}\n`);
  await deleteQueues('bench_idle');
  const { workers } = await startNodeWorkers('nestjs-worker.js', 1, ['--queue', 'bench_idle', '--table', 'bench_idle'], 'idle');
  const pid = workers[0].pid as number;
  try {
    await new Promise((r) => setTimeout(r, 5000));
    const roll = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(roll)?.[1] ?? 0);
    const whole = { rssMiB: mib(kb('Rss')), pssMiB: mib(kb('Pss')), ussMiB: mib(kb('Private_Clean') + kb('Private_Dirty')) };
    process.stdout.write(`${JSON.stringify({ worker: 'idle, connected', flags: process.env.BENCH_WORKER_NODE_ARGS ?? '', ...whole })}\n`);
    for (const [kind, v] of Object.entries(smapsByKind(pid))) {
      process.stdout.write(`${JSON.stringify({ kind, rssMiB: mib(v.Rss ?? 0), pssMiB: mib(v.Pss ?? 0), privateMiB: mib((v.Private_Clean ?? 0) + (v.Private_Dirty ?? 0)) })}\n`);
    }
  } finally {
    await Promise.all(workers.map((w) => stopChild(w)));
    await deleteQueues('bench_idle');
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
