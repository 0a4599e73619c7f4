import { planChain, planChord, planGroup, Signature, FreezeContext, CanvasMessage, CHORD_COUNTER_HEADER } from '../../../lib/protocol/canvas';
import { encodeTaskMessage, PeerCompat } from '../../../lib/protocol/task-message';
import { CAPTURE_NOW_MICROS, CAPTURE_ORIGIN, CAPTURE_REPLY_TO, CaptureFile, CapturedMessage, loadVector } from '../../support/vectors';

// amqplib's own frame encoder (see task-message.golden.spec.ts): the property bytes on the wire.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const defs = require(require('node:path').join(__dirname, '../../../node_modules/amqplib/lib/defs.js'));

const TEXT = 'storage yay my DB is powerful results Astra';

/** Ids handed out in this order (the captured group / chord_unlock ids), then fails loudly. */
function ctxWith(peer: PeerCompat, ids: string[]): FreezeContext {
  const queue = [...ids];
  return {
    replyTo: CAPTURE_REPLY_TO,
    peer,
    newId: () => {
      const id = queue.shift();
      if (!id) throw new Error('the plan asked for more ids than Celery used');
      return id;
    },
  };
}

function encode(m: CanvasMessage, peer: PeerCompat) {
  return encodeTaskMessage(m.spec, { nowMicros: CAPTURE_NOW_MICROS, origin: CAPTURE_ORIGIN, peer });
}

function expectSame(m: CanvasMessage, captured: CapturedMessage, peer: PeerCompat): void {
  const encoded = encode(m, peer);
  expect(encoded.headers).toEqual(captured.headers);
  expect(Object.keys(encoded.headers)).toEqual(Object.keys(captured.headers));
  expect(encoded.body.toString('utf8')).toBe(captured.body);
  const frame: Buffer = defs.encodeProperties(defs.BasicProperties, 1, encoded.body.length, { ...encoded.properties, headers: encoded.amqpHeaders });
  expect(frame.subarray(19, frame.length - 1).toString('hex')).toBe(captured.props_bytes_hex);
}

const sortWords = (...args: unknown[]) => new Signature('tasks.sortWords', args);

describe.each([
  ['capture_new.json', '5.3'],
  ['capture_old.json', '5.2'],
] as [string, PeerCompat][])('canvas messages equal Celery\'s captured ones (%s)', (file, peer) => {
  const capture = loadVector<CaptureFile>(file);
  const labelled = (label: string) => capture.messages.filter((m) => m.label === label);

  it('§8.3 chain(sortWords.s(TEXT, False), sortWords.s(True)): one message, embed.chain = the rest reversed, result = the last step', () => {
    const [captured] = labelled('chain');
    const plan = planChain([
      sortWords(TEXT, false).set({ taskId: 'a1b2c3d4-0000-4000-8000-000000000001' }),
      sortWords(true).set({ taskId: 'a1b2c3d4-0000-4000-8000-000000000002' }),
    ], ctxWith(peer, []));
    expect(plan.messages).toHaveLength(1);
    expect(plan.id).toBe('a1b2c3d4-0000-4000-8000-000000000002');
    expect(plan.ids).toEqual(['a1b2c3d4-0000-4000-8000-000000000001', 'a1b2c3d4-0000-4000-8000-000000000002']);
    expectSame(plan.messages[0], captured, peer);
  });

  it('group(sortWords.s(TEXT, False), sortWords.s(TEXT, True)) with task_id as the group id: group and group_index headers', () => {
    const captured = labelled('group');
    const groupId = captured[0].headers.group as string;
    const plan = planGroup([
      sortWords(TEXT, false).set({ taskId: 'b0000000-0000-4000-8000-000000000001' }),
      sortWords(TEXT, true).set({ taskId: 'b0000000-0000-4000-8000-000000000002' }),
    ], ctxWith(peer, []), { groupId });
    expect(plan.groupId).toBe(groupId);
    expect(plan.messages).toHaveLength(2);
    plan.messages.forEach((m, i) => expectSame(m, captured[i], peer));
  });

  it('§8.7 chord([sortWords.s(TEXT, False), sortWords.s(TEXT, True)], sortWords.s(False)): chord_unlock first, then the header with embed.chord', () => {
    const captured = labelled('chord');
    const [unlock, ...headers] = captured;
    const groupId = headers[0].headers.group as string;
    const plan = planChord(
      [sortWords(TEXT, false).set({ taskId: 'c0000000-0000-4000-8000-000000000001' }), sortWords(TEXT, true).set({ taskId: 'c0000000-0000-4000-8000-000000000002' })],
      sortWords(false),
      ctxWith(peer, [groupId, unlock.headers.id as string]),
      { taskId: 'c0000000-0000-4000-8000-0000000000bb' },
    );
    expect(plan.id).toBe('c0000000-0000-4000-8000-0000000000bb');
    expect(plan.groupId).toBe(groupId);
    expect(plan.headerIds).toEqual(['c0000000-0000-4000-8000-000000000001', 'c0000000-0000-4000-8000-000000000002']);
    expect(plan.messages).toHaveLength(3);
    // chord_unlock is routed as the body (its queue), with no priority property
    expect(plan.messages[0].route.name).toBe('tasks.sortWords');
    expect(encode(plan.messages[0], peer).properties.priority).toBeUndefined();
    plan.messages.forEach((m, i) => expectSame(m, captured[i], peer));
  });

  it('§8.7 the same chord in counter mode: no chord_unlock; the header messages are the captured ones plus the nestjs_chord_size header', () => {
    const captured = labelled('chord');
    const [, ...headers] = captured;
    const groupId = headers[0].headers.group as string;
    const plan = planChord(
      [sortWords(TEXT, false).set({ taskId: 'c0000000-0000-4000-8000-000000000001' }), sortWords(TEXT, true).set({ taskId: 'c0000000-0000-4000-8000-000000000002' })],
      sortWords(false),
      ctxWith(peer, [groupId]),
      { taskId: 'c0000000-0000-4000-8000-0000000000bb', completion: 'counter' },
    );
    expect(plan.id).toBe('c0000000-0000-4000-8000-0000000000bb');
    expect(plan.messages.map((m) => m.spec.task)).toEqual(['tasks.sortWords', 'tasks.sortWords']);
    plan.messages.forEach((m, i) => {
      const encoded = encode(m, peer);
      const { [CHORD_COUNTER_HEADER]: size, ...rest } = encoded.headers;
      expect(size).toBe(2);
      // Celery's own headers first, in Celery's order; ours after them
      expect(Object.keys(encoded.headers).pop()).toBe(CHORD_COUNTER_HEADER);
      expect(rest).toEqual(headers[i].headers);
      expect(encoded.body.toString('utf8')).toBe(headers[i].body);
    });
  });
});
