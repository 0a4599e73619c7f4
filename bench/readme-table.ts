/**
 * README's Performance table, generated from bench/results/full.json (the full run kept for
 * reference), so that the published figures are exactly the file's, with the commit and machine
 * each system was measured at.
 *
 *   node dist-bench/bench/readme-table.js            print the section
 *   node dist-bench/bench/readme-table.js --write    replace it in README.md (npm run bench:table)
 *
 * test/unit/bench/readme-table.spec.ts fails when README and full.json disagree. Older files
 * (before PSS and the per-system tags) still render: what they lack says "not measured", their
 * summed-RSS memory figure is shown as such, and their tag comes from `run.git` / `run.date`.
 * The markers are handled by scripts/faults-table.js's readmeSection / withTable.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './python-env';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const markers = require(join(REPO_ROOT, 'scripts', 'faults-table.js')) as {
  readmeSection(readme: string, begin: string, end: string): string | null;
  withTable(readme: string, table: string, begin: string, end: string): string;
};

export const FULL_JSON = join(REPO_ROOT, 'bench', 'results', 'full.json');
export const README = join(REPO_ROOT, 'README.md');
export const BEGIN = '<!-- bench-table:begin (generated from bench/results/full.json by `npm run bench:table`; do not edit) -->';
export const END = '<!-- bench-table:end -->';

const NOT_MEASURED = 'not measured';
const LABELS: Record<string, string> = {
  nestjs: 'nestjs-celery',
  raw: 'raw amqplib + cassandra-driver',
  celery: 'Python Celery',
  nestjs_thread: 'nestjs-celery, task in a worker thread',
};

interface LoadLevel {
  fraction: number;
  target_per_s: number;
  p50_ms: number;
  p99_ms: number;
}

interface SystemFigures {
  publish_per_s?: number;
  end_to_end_per_s?: number;
  p50_ms?: number;
  p99_ms?: number;
  pss_mb?: number;
  rss_mb?: number;
  n?: number;
  celery?: string;
  pool?: string;
  concurrency?: number;
  prefetch_multiplier?: number;
  under_load?: LoadLevel[];
  prefetch1?: { end_to_end_per_s: number; p50_ms: number; p99_ms: number };
  measured_at?: { commit: string; dirty: boolean; date: string; machine: string };
  runs?: { pool?: string; concurrency?: number; prefetch_multiplier: number; end_to_end_per_s: number; pss_mb?: number }[];
}

export interface FullResults {
  machine?: Record<string, unknown>;
  systems: Record<string, SystemFigures>;
  ratios?: Record<string, Record<string, number>>;
  wire_check?: { same_bytes: boolean; body_bytes: number; header_table_bytes: number };
  run?: { date?: string; git?: { commit?: string; libUncommittedChanges?: boolean } };
}

const num = (v: number | undefined, unit = '') => (typeof v === 'number' && Number.isFinite(v) ? `${v.toLocaleString('en-US')}${unit}` : NOT_MEASURED);

function memory(s: SystemFigures): string {
  if (typeof s.pss_mb === 'number') return num(s.pss_mb, ' MiB');
  if (typeof s.rss_mb === 'number') return `${NOT_MEASURED} (old run: summed RSS ${num(s.rss_mb, ' MiB')})`;
  return NOT_MEASURED;
}

function loadCell(s: SystemFigures, fraction: number): string {
  const level = s.under_load?.find((l) => l.fraction === fraction);
  return level ? `${num(level.p50_ms)} / ${num(level.p99_ms)} ms (${num(level.target_per_s)}/s)` : NOT_MEASURED;
}

function systemLabel(name: string, s: SystemFigures): string {
  const base = LABELS[name] ?? name;
  if (name !== 'celery') return base;
  const version = s.celery ? ` ${s.celery}` : '';
  const config = s.pool
    ? ` (best: ${s.pool}, concurrency ${s.concurrency}, prefetch multiplier ${s.prefetch_multiplier})`
    : s.prefetch_multiplier !== undefined
      ? ` (prefetch multiplier ${s.prefetch_multiplier}; pool not recorded: older file)`
      : '';
  return `${base}${version}${config}`;
}

/** One system's tag: its own `measured_at`, or for older files the run's commit and date. */
function tag(s: SystemFigures, results: FullResults): string {
  const m = s.measured_at;
  if (m) return `\`${m.commit}\`${m.dirty ? ' (uncommitted changes)' : ''}, ${m.date.slice(0, 10)}`;
  const git = results.run?.git;
  return `\`${git?.commit ?? 'unknown'}\`${git?.libUncommittedChanges ? ' (uncommitted changes)' : ''}, ${(results.run?.date ?? 'unknown').slice(0, 10)} (run-wide tag: older file)`;
}

function ratioLine(results: FullResults): string[] {
  const out: string[] = [];
  const r = results.ratios ?? {};
  const nr = r['nestjs/raw'];
  const nc = r['nestjs/celery'];
  const s = results.systems;
  const parts: string[] = [];
  if (nr) {
    parts.push(`nestjs / raw: end to end ${num(nr.end_to_end_per_s)}×, confirmed publish ${num(nr.publish_per_s)}×`);
    if (s.nestjs && s.raw && typeof s.nestjs.p50_ms === 'number' && typeof s.raw.p50_ms === 'number') {
      const d = Math.round((s.nestjs.p50_ms - s.raw.p50_ms) * 100) / 100;
      parts.push(`p50 round trip raw ${d >= 0 ? '+' : '−'} ${Math.abs(d)} ms`);
    }
  }
  if (nc) {
    parts.push(`nestjs / Celery: end to end ${num(nc.end_to_end_per_s)}×, worker memory ${nc.pss_mb !== undefined ? `${num(nc.pss_mb)}× (PSS)` : NOT_MEASURED + (nc.rss_mb !== undefined ? ` (old run: ${num(nc.rss_mb)}× summed RSS)` : '')}`);
  }
  if (parts.length) out.push(`Ratios: ${parts.join('; ')}.`);
  return out;
}

/** The README section for a full.json's contents. */
export function renderTable(results: FullResults): string {
  const lines = [
    '| system | publish/s | end-to-end tasks/s | round trip p50 | p99 | worker memory (peak PSS) | prefetch 1: tasks/s, p50 | p50 / p99 under 50 % load | under 90 % load | measured at |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const [name, s] of Object.entries(results.systems)) {
    const publish = `${num(s.publish_per_s)}${name === 'celery' ? ' (no confirms)' : ' (confirmed)'}`;
    const p1 = s.prefetch1 ? `${num(s.prefetch1.end_to_end_per_s)}, ${num(s.prefetch1.p50_ms, ' ms')}` : name === 'celery' ? '–' : NOT_MEASURED;
    const load = (f: number) => (name === 'celery' && !s.under_load ? '–' : loadCell(s, f));
    lines.push(
      `| ${systemLabel(name, s)} | ${publish} | ${num(s.end_to_end_per_s)} | ${num(s.p50_ms, ' ms')} | ${num(s.p99_ms, ' ms')} | ${memory(s)} | ${p1} | ${load(0.5)} | ${load(0.9)} | ${tag(s, results)} |`,
    );
  }
  lines.push('');
  lines.push(...ratioLine(results));
  const celery = results.systems.celery;
  if (celery?.runs?.length) {
    lines.push(
      `Celery configurations (the best end to end is its row): ${celery.runs
        .map((r) => `${r.pool ? `${r.pool} (${r.concurrency})` : 'pool not recorded (older file)'} ×${r.prefetch_multiplier} ${num(r.end_to_end_per_s)}/s, ${r.pss_mb !== undefined ? num(r.pss_mb, ' MiB') : NOT_MEASURED}`)
        .join('; ')}.`,
    );
  }
  const w = results.wire_check;
  lines.push(
    w
      ? `Wire check: raw and nestjs published ${w.same_bytes ? 'the same bytes' : 'DIFFERENT bytes'} for the same task (body ${w.body_bytes} B, header table ${w.header_table_bytes} B).`
      : `Wire check: ${NOT_MEASURED} (older file).`,
  );
  const machines = [...new Set(Object.values(results.systems).map((s) => s.measured_at?.machine).filter((m): m is string => Boolean(m)))];
  if (machines.length === 0 && results.machine) {
    const m = results.machine;
    machines.push(`${String(m.cpus)} x ${String(m.cpuModel)}, ${String(m.memGiB)} GiB, node ${String(m.node)}, RabbitMQ ${String(m.rabbitmq ?? '?')}, Cassandra ${String(m.cassandra ?? '?')}`);
  }
  lines.push(`Machine: ${machines.join('; ') || 'unknown'}. Figures from \`bench/results/full.json\`; N ${Object.entries(results.systems).map(([n, s]) => `${n} ${num(s.n)}`).join(', ')}.`);
  return lines.join('\n');
}

export function readFull(path = FULL_JSON): FullResults {
  return JSON.parse(readFileSync(path, 'utf8')) as FullResults;
}

export function readmeSection(readme: string): string | null {
  return markers.readmeSection(readme, BEGIN, END);
}

export function withTable(readme: string, table: string): string {
  return markers.withTable(readme, table, BEGIN, END);
}

if (require.main === module) {
  const table = renderTable(readFull());
  if (process.argv.includes('--write')) {
    writeFileSync(README, withTable(readFileSync(README, 'utf8'), table));
    process.stdout.write(`README.md: performance table written from ${FULL_JSON}\n`);
  } else {
    process.stdout.write(table + '\n');
  }
}
