import { readFileSync } from 'node:fs';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const table = require('../../../scripts/faults-table.js') as {
  renderTable(results: unknown): string;
  readmeSection(readme: string): string | null;
  withTable(readme: string, table: string): string;
  readResults(): { scenarios: Record<string, unknown>[] };
  README: string;
  BEGIN: string;
  END: string;
};

const report = {
  scenario: 'kill -9 and restart',
  sent: 3000,
  completed: 3000,
  lost: 0,
  wronglyFailed: 0,
  executedTwice: 128,
  executedTwiceBound: 256,
  executedTwiceBoundWhy: 'redelivered',
  crashes: 0,
  completedAtFault: 322,
  redelivered: 256,
  peakRssMb: 108,
  seconds: 4.5,
  commit: 'abc1234',
  measuredAt: '2026-12-02',
};

describe('README fault table', () => {
  it('is the table made from test/faults/results.json (run `npm run faults:table` after the fault suite)', () => {
    const readme = readFileSync(table.README, 'utf8');
    const section = table.readmeSection(readme);
    expect(section).not.toBeNull();
    expect(section).toBe(table.renderTable(table.readResults()));
  });

  it('has a row per scenario in the results file, with its numbers, bound and commit', () => {
    const rendered = table.renderTable({ scenarios: [report, { ...report, scenario: 'hostile | input', detail: 'peak 189 MB', redelivered: undefined, completedAtFault: null }] });
    const rows = rendered.split('\n');
    expect(rows[2]).toBe('| kill -9 and restart | 3000 | 3000 | 0 | 0 | 128 (≤ 256: redelivered) | 0 | 322 | 256 | 108 MB | 4.5 |');
    expect(rows[3]).toBe('| hostile \\| input (peak 189 MB) | 3000 | 3000 | 0 | 0 | 128 (≤ 256: redelivered) | 0 | – | – | 108 MB | 4.5 |');
    expect(rendered).toContain('Measured at commit `abc1234` on 2026-12-02');
  });

  it('replaces only the text between the markers', () => {
    const readme = `before\n${table.BEGIN}\nold table\n${table.END}\nafter\n`;
    const written = table.withTable(readme, 'new table');
    expect(written).toBe(`before\n${table.BEGIN}\nnew table\n${table.END}\nafter\n`);
    expect(table.readmeSection(written)).toBe('new table');
    expect(() => table.withTable('no markers', 'x')).toThrow(/no <!-- faults-table:begin/);
  });
});
