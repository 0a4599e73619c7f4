#!/usr/bin/env node
// README "Reliability" fault table, generated from the fault suite's results file.
//
// Usage: node scripts/faults-table.js            print the table
//        node scripts/faults-table.js --write    replace the table in README.md (npm run faults:table)
//
// test/faults writes test/faults/results.json (one entry per scenario: its last run, with the commit and date it
// was measured at) and then README's table from it; test/unit/faults/readme-table.spec.ts fails when README's table
// and that file disagree (one edited or committed without the other).
'use strict';
const { readFileSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');

const ROOT = join(__dirname, '..');
const RESULTS = join(ROOT, 'test', 'faults', 'results.json');
const README = join(ROOT, 'README.md');
const BEGIN = '<!-- faults-table:begin (generated from test/faults/results.json by `npm run faults:table`; do not edit) -->';
const END = '<!-- faults-table:end -->';

const dash = (v) => (v === undefined || v === null ? '–' : String(v));

/** The markdown table (and the line saying when it was measured) for a results file's contents. */
function renderTable(results) {
  const lines = [
    '| scenario | sent | completed | lost | wrongly failed | executed twice (bound) | crashes | run when the fault struck | redelivered | worker peak RSS | seconds |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of results.scenarios) {
    const scenario = r.detail ? `${r.scenario} (${r.detail})` : r.scenario;
    lines.push(
      `| ${scenario.replace(/\|/g, '\\|')} | ${r.sent} | ${r.completed} | ${r.lost} | ${r.wronglyFailed} | ${r.executedTwice} (≤ ${r.executedTwiceBound}: ${r.executedTwiceBoundWhy}) | ` +
        `${r.crashes} | ${dash(r.completedAtFault)} | ${dash(r.redelivered)} | ${r.peakRssMb} MB | ${r.seconds} |`,
    );
  }
  const commits = [...new Set(results.scenarios.map((r) => `\`${r.commit}\``))];
  const dates = [...new Set(results.scenarios.map((r) => r.measuredAt))];
  lines.push('', `Measured at commit ${commits.join(', ')} on ${dates.join(', ')} (\`test/faults/results.json\`).`);
  return lines.join('\n');
}

/** The text between README's markers (the fault table's unless others are given), or null when they are missing. */
function readmeSection(readme, beginMarker = BEGIN, endMarker = END) {
  const begin = readme.indexOf(beginMarker);
  const end = readme.indexOf(endMarker);
  if (begin < 0 || end < begin) return null;
  return readme.slice(begin + beginMarker.length, end).trim();
}

/** README with `table` between the markers (the fault table's unless others are given; bench/readme-table.ts uses its own). */
function withTable(readme, table, beginMarker = BEGIN, endMarker = END) {
  const begin = readme.indexOf(beginMarker);
  const end = readme.indexOf(endMarker);
  if (begin < 0 || end < begin) throw new Error(`README.md has no ${beginMarker} ... ${endMarker} section`);
  return `${readme.slice(0, begin + beginMarker.length)}\n${table}\n${readme.slice(end)}`;
}

function readResults() {
  return JSON.parse(readFileSync(RESULTS, 'utf8'));
}

/** Writes README's table from the results file (the fault suite calls it after each scenario, so the two never disagree). */
function writeReadme() {
  writeFileSync(README, withTable(readFileSync(README, 'utf8'), renderTable(readResults())));
}

module.exports = { renderTable, readmeSection, withTable, readResults, writeReadme, RESULTS, README, BEGIN, END };

if (require.main === module) {
  if (process.argv.includes('--write')) {
    writeReadme();
    process.stdout.write(`README.md: fault table written from ${RESULTS}\n`);
  } else {
    const table = renderTable(readResults());
    process.stdout.write(table + '\n');
  }
}
