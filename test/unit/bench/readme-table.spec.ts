import { readFileSync } from 'node:fs';
import { BEGIN, END, FullResults, README, readFull, readmeSection, renderTable, withTable } from '../../../bench/readme-table';

/** A system as bench/run.ts writes it today: PSS, per-system tag, load levels, prefetch 1. */
const tagged = {
  publish_per_s: 3100,
  end_to_end_per_s: 2500,
  p50_ms: 2.9,
  p99_ms: 9.5,
  pss_mb: 80.4,
  rss_mb: 101.2,
  n: 20000,
  under_load: [
    { fraction: 0.5, target_per_s: 1250, p50_ms: 3.4, p99_ms: 11.2 },
    { fraction: 0.9, target_per_s: 2250, p50_ms: 6.1, p99_ms: 30.5 },
  ],
  prefetch1: { end_to_end_per_s: 420, p50_ms: 2.4, p99_ms: 4.1 },
  measured_at: { commit: 'abc1234', dirty: false, date: '2026-12-02T12:00:00.000Z', machine: 'box: 2 x Xeon' },
};

describe('README performance table', () => {
  it('is the table made from bench/results/full.json (run `npm run bench:table` after replacing full.json)', () => {
    const section = readmeSection(readFileSync(README, 'utf8'));
    expect(section).not.toBeNull();
    expect(section).toBe(renderTable(readFull()));
  });

  it('tags every row with the commit and date it was measured at, and names the machine', () => {
    const rendered = renderTable({
      systems: { nestjs: tagged, raw: { ...tagged, measured_at: { ...tagged.measured_at, commit: 'def5678', dirty: true } } },
      ratios: { 'nestjs/raw': { end_to_end_per_s: 1, publish_per_s: 1 } },
      wire_check: { same_bytes: true, body_bytes: 130, header_table_bytes: 400 },
    });
    const rows = rendered.split('\n');
    expect(rows[2]).toBe(
      '| nestjs-celery | 3,100 (confirmed) | 2,500 | 2.9 ms | 9.5 ms | 80.4 MiB | 420, 2.4 ms | 3.4 / 11.2 ms (1,250/s) | 6.1 / 30.5 ms (2,250/s) | `abc1234`, 2026-12-02 |',
    );
    expect(rows[3]).toContain('| `def5678` (uncommitted changes), 2026-12-02 |');
    expect(rendered).toContain('Machine: box: 2 x Xeon.');
    expect(rendered).toContain('raw and nestjs published the same bytes');
  });

  it('renders an older file (summed RSS, no PSS, no per-system tags) as "not measured" instead of failing', () => {
    const old: FullResults = {
      machine: { cpus: 2, cpuModel: 'Xeon', memGiB: 23.5, node: 'v20', rabbitmq: '3.10.8', cassandra: '5.0.8' },
      systems: { nestjs: { publish_per_s: 3049, end_to_end_per_s: 2116, p50_ms: 3.19, p99_ms: 10.6, rss_mb: 108.1, n: 20000 } },
      ratios: { 'nestjs/celery': { end_to_end_per_s: 5.734, rss_mb: 0.605 } },
      run: { date: '2026-12-01T18:30:51.770Z', git: { commit: 'f11fc81', libUncommittedChanges: false } },
    };
    const rendered = renderTable(old);
    expect(rendered.split('\n')[2]).toBe(
      '| nestjs-celery | 3,049 (confirmed) | 2,116 | 3.19 ms | 10.6 ms | not measured (old run: summed RSS 108.1 MiB) | not measured | not measured | not measured | `f11fc81`, 2026-12-01 (run-wide tag: older file) |',
    );
    expect(rendered).toContain('worker memory not measured (old run: 0.605× summed RSS)');
    expect(rendered).toContain('Wire check: not measured');
  });

  it('replaces only the text between its own markers', () => {
    const written = withTable(`a\n${BEGIN}\nold\n${END}\nb\n`, 'new');
    expect(written).toBe(`a\n${BEGIN}\nnew\n${END}\nb\n`);
    expect(() => withTable('no markers', 'x')).toThrow(/no <!-- bench-table:begin/);
  });
});
