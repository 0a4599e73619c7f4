import { baseText, taskText } from '../../../bench/common';
import { libraryDifferences } from '../../../bench/wire-check';

const route = { replyTo: '6f1d3c52-9a57-4c8e-a2c4-1f0e8d6b7a10', notify: 'amq.gen-Jp3xQ0b8n2mYk1c9Zf7wTg', origin: 'gen4242@bench-host' };
const id = 'd9c1b2a3-4e5f-4a6b-8c7d-0e1f2a3b4c5d';

describe("raw's hand-built Celery message", () => {
  it.each([
    ['the walkthrough sentence with a task word', taskText(baseText(null), 0)],
    ['a 1,000-byte payload', taskText(baseText(1000), 123456)],
    ['a 5,000-byte payload (argsrepr cut at 1,024)', taskText(baseText(5000), 7)],
    ["quotes and backslashes in the argument", "it's a \\ \"quoted\" word 000001"],
  ])('is byte for byte what the Producer encodes for the same task: %s', (_what, text) => {
    expect(libraryDifferences(id, text, route)).toEqual([]);
  });

  it('cuts its argsrepr exactly where saferepr does, for every text length around the 1,024 limit', () => {
    for (let length = 1005; length <= 1030; length++) {
      for (const text of ['w'.repeat(length), `${'ab '.repeat(length)}`.slice(0, length), `it's ${'x'.repeat(length)}`.slice(0, length)]) {
        expect([length, libraryDifferences(id, text, route)]).toEqual([length, []]);
      }
    }
  });

  it('is caught when it differs (a non-ASCII argument: Python json.dumps escapes it, raw does not)', () => {
    const differences = libraryDifferences(id, 'café 000001', route);
    expect(differences.some((d) => d.startsWith('body:'))).toBe(true);
  });
});
