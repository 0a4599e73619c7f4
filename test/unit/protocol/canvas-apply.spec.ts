import { chordBodyCanvas, chordBodyFailureTargets, chordErrorOf, chordState, errbackCanvas, InvalidSignatureError, parseChordUnlock, parseSignature, remainingChainIds, successCanvas } from '../../../lib/protocol/canvas-apply';
import { decodeTaskMessage } from '../../../lib/protocol/task-message';
import { encodeTaskMessage } from '../../../lib/protocol/task-message';
import { CAPTURE_NOW_MICROS, CAPTURE_ORIGIN, CaptureFile, CapturedMessage, loadVector } from '../../support/vectors';

const ids = () => {
  let n = 0;
  return () => `new-${++n}`;
};

const sig = (task: string, args: unknown[], options: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) => ({
  task,
  args,
  kwargs: {},
  options,
  subtask_type: null,
  immutable: false,
  ...extra,
});

describe('canvas-apply', () => {
  it.each([
    ['capture_new.json', 'worker_new.json', '5.3'],
    ['capture_old.json', 'worker_old.json', '5.2'],
  ] as const)('builds the chain step Celery %s published after step 1 (golden, wire spec §8.3b)', (captureFile, workerFile, peer) => {
    const capture = loadVector<CaptureFile>(captureFile);
    const step1 = capture.messages.find((m) => m.label === 'chain') as CapturedMessage;
    const embed = JSON.parse(step1.body)[2];
    const worker = loadVector<Record<string, { published: CapturedMessage[]; cql: unknown[][] }>>(workerFile);
    const expected = worker.chain_step.published[0];
    const applied = successCanvas(embed, 'Astra DB is my powerful results storage yay', { id: step1.headers.id as string, rootId: step1.headers.root_id as string }, ids());
    expect(applied.publish).toHaveLength(1);
    const encoded = encodeTaskMessage(applied.publish[0].spec, { nowMicros: CAPTURE_NOW_MICROS, origin: CAPTURE_ORIGIN, peer });
    expect(encoded.headers).toEqual(expected.headers);
    expect(Object.keys(encoded.headers)).toEqual(Object.keys(expected.headers));
    expect(encoded.body.toString('utf8')).toBe(expected.body);
    expect(encoded.properties.correlationId).toBe(expected.properties.correlation_id);
    expect(encoded.properties.replyTo).toBe(expected.properties.reply_to);
    expect(encoded.properties.priority).toBe(expected.properties.priority);
    // the SUCCESS row of step 1 lists step 2: b'[[["a1b2...0002", null], null]]'
    const childrenBlob = (worker.chain_step.cql[0][2] as string[])[5];
    expect(`b'${JSON.stringify(applied.children).replace(/,/g, ', ')}'`).toBe(childrenBlob);
  });

  it('prepends the return value unless the signature is immutable, and keeps the frozen ids and routing options', () => {
    const chain = [sig('t.last', [1], { task_id: 'c' }), sig('t.mid', [9], { task_id: 'b', queue: 'q2', priority: 5, countdown: 3 }, { immutable: true })];
    const applied = successCanvas({ callbacks: null, chain }, 42, { id: 'a', rootId: 'root' }, ids());
    const step = applied.publish[0];
    expect(step.spec).toMatchObject({ task: 't.mid', id: 'b', args: [9], parentId: 'a', rootId: 'root', countdown: 3, priority: 5 });
    expect(step.spec.embed?.chain).toEqual([chain[0]]);
    expect(step.route).toEqual({ queue: 'q2', exchange: undefined, routingKey: undefined, priority: 5 });
    const next = successCanvas({ callbacks: null, chain: step.spec.embed?.chain ?? null }, 7, { id: 'b', rootId: 'root' }, ids());
    expect(next.publish[0].spec).toMatchObject({ id: 'c', args: [7, 1], parentId: 'b' });
    expect(next.publish[0].spec.embed?.chain).toEqual([]);
  });

  it('applies one callback alone and several as one group, callbacks before the chain step, children in that order', () => {
    const one = successCanvas({ callbacks: [sig('t.cb', [], { task_id: 'cb1' })], chain: null }, 'r', { id: 'a', rootId: 'a' }, ids());
    expect(one.publish.map((p) => [p.spec.id, p.spec.args, p.spec.group])).toEqual([['cb1', ['r'], null]]);
    expect(one.children).toEqual([[['cb1', null], null]]);
    const several = successCanvas(
      { callbacks: [sig('t.x', [1]), sig('t.y', [], { task_id: 'y' })], chain: [sig('t.next', [], { task_id: 'n' })] },
      'r',
      { id: 'a', rootId: 'a' },
      ids(),
    );
    expect(several.publish.map((p) => [p.spec.task, p.spec.id, p.spec.args, p.spec.group, p.spec.groupIndex])).toEqual([
      ['t.x', 'new-2', ['r', 1], 'new-1', 0],
      ['t.y', 'y', ['r'], 'new-1', 1],
      ['t.next', 'n', ['r'], null, null],
    ]);
    expect(several.children).toEqual([[['new-1', null], [[['new-2', null], null], [['y', null], null]]], [['n', null], null]]);
  });

  it('a group signature as a callback is published as its group, with its own id', () => {
    const group = { task: 'celery.group', args: [], kwargs: { tasks: [sig('t.a', []), sig('t.b', [])] }, options: { task_id: 'g' }, subtask_type: 'group', immutable: false };
    const applied = successCanvas({ callbacks: [group], chain: null }, 5, { id: 'p', rootId: 'p' }, ids());
    expect(applied.publish.map((p) => [p.spec.task, p.spec.group, p.spec.groupIndex, p.spec.args])).toEqual([
      ['t.a', 'g', 0, [5]],
      ['t.b', 'g', 1, [5]],
    ]);
  });

  it("a group ending a chain is published as that group: its frozen id and its members' ids, the result prepended", () => {
    const group = { task: 'celery.group', args: [], kwargs: { tasks: [sig('t.a', [1], { task_id: 'm1' }), sig('t.b', [], { task_id: 'm2' })] }, options: { task_id: 'g' }, subtask_type: 'group', immutable: false };
    const applied = successCanvas({ callbacks: null, chain: [group] }, 5, { id: 'p', rootId: 'r' }, ids());
    expect(applied.publish.map((p) => [p.spec.id, p.spec.group, p.spec.groupIndex, p.spec.args, p.spec.parentId, p.spec.rootId])).toEqual([
      ['m1', 'g', 0, [5, 1], 'p', 'r'],
      ['m2', 'g', 1, [5], 'p', 'r'],
    ]);
    expect(applied.children).toEqual([[['g', null], [[['m1', null], null], [['m2', null], null]]]]);
    expect(() => successCanvas({ callbacks: null, chain: [sig('t.z', []), group] }, 5, { id: 'p', rootId: 'r' }, ids())).toThrow(/a group followed by more chain steps/);
  });

  it('names what is wrong with a signature it cannot apply', () => {
    const bad = (value: unknown) => () => successCanvas({ callbacks: null, chain: [value] }, 1, { id: 'a', rootId: 'a' }, ids());
    expect(bad('tasks.add')).toThrow(new InvalidSignatureError('chain step 0: not a signature dict ("tasks.add")'));
    expect(bad({ task: '' })).toThrow(/chain step 0: "task" is not a non-empty string/);
    expect(bad({ task: 't.x', args: 'no' })).toThrow(/chain step 0 \(t.x\): "args" is not a list/);
    expect(bad({ task: 't.x', options: { countdown: 'soon' } })).toThrow(/option countdown is not a number/);
    expect(bad({ task: 'celery.chord', subtask_type: 'chord' })).toThrow(/chain step 0 celery.chord: kwargs.header: expected a signature dict, got undefined/);
    expect(bad({ task: 'celery.chunks', subtask_type: 'chunks', kwargs: {} })).toThrow(/a chunks signature here is not supported by the NestJS worker/);
    expect(() => parseSignature({ task: 't', immutable: 1 }, 'x')).toThrow(/"immutable" is not a boolean/);
  });

  it('lists the remaining chain ids to fail, in list order, with a chord element\'s body, skipping elements without an id', () => {
    const chord = { task: 'celery.chord', args: [], kwargs: { header: [], body: sig('t.body', [], { task_id: 'body' }) }, options: {}, subtask_type: 'chord', immutable: false };
    expect(remainingChainIds([sig('t.c', [], { task_id: 'c' }), sig('t.noid', []), chord, 'junk'])).toEqual(['c', 'body']);
    expect(remainingChainIds(null)).toEqual([]);
  });

  it('sends errbacks as one group with the failed task id as their argument', () => {
    const applied = errbackCanvas([sig('t.onError', [], { task_id: 'e1' }), sig('t.log', ['x'], {}, { immutable: true })], { id: 'failed', rootId: 'root' }, ids());
    expect(applied.publish.map((p) => [p.spec.task, p.spec.id, p.spec.args, p.spec.parentId, p.spec.rootId, p.spec.group, p.spec.groupIndex])).toEqual([
      ['t.onError', 'e1', ['failed'], 'failed', 'root', 'new-1', 0],
      ['t.log', 'new-2', ['x'], 'failed', 'root', 'new-1', 1],
    ]);
    expect(errbackCanvas(null, { id: 'f', rootId: 'f' }, ids()).publish).toEqual([]);
  });

  it.each(['capture_new.json', 'capture_old.json'])('reads the celery.chord_unlock call Celery published (%s, wire spec §8.7) and sends its body with the values prepended', (file) => {
    const m = loadVector<CaptureFile>(file).messages.find((x) => x.headers.task === 'celery.chord_unlock') as CapturedMessage;
    const decoded = decodeTaskMessage({ headers: m.headers, contentType: 'application/json', body: Buffer.from(m.body, 'utf8') });
    const { interval, max_retries: maxRetries, result } = decoded.kwargs;
    const call = parseChordUnlock(decoded.args[0], decoded.args[1], interval, maxRetries, result);
    expect(call).toMatchObject({ groupId: decoded.args[0], interval: 1, maxRetries: null });
    const headerIds = call.header.map((t) => t.id);
    expect(headerIds).toHaveLength(2);
    const waiting = chordState(call.header, new Map([[headerIds[0], { status: 'SUCCESS', result: 'a' }]]));
    expect(waiting).toEqual({ kind: 'waiting', pending: 1 });
    const metas = new Map(headerIds.map((id, i) => [id, { status: 'SUCCESS' as const, result: `v${i}` }]));
    const ready = chordState(call.header, metas);
    expect(ready).toEqual({ kind: 'ready', values: ['v0', 'v1'] });
    const body = chordBodyCanvas(call, ['v0', 'v1'], { id: m.headers.id as string, rootId: m.headers.root_id as string }, ids());
    expect(body.publish[0].spec).toMatchObject({ task: 'tasks.sortWords', id: 'c0000000-0000-4000-8000-0000000000bb', args: [['v0', 'v1'], false], parentId: m.headers.id });
  });

  it('fails a chord on the first failed header task in header order, with the ChordError Celery stores', () => {
    const header = ['a', 'b', 'c'].map((id) => ({ id, parent: null, results: null }));
    const exc = { exc_type: 'ValueError', exc_message: ['boom'], exc_module: 'builtins' };
    const state = chordState(header, new Map([['a', { status: 'SUCCESS', result: 1 }], ['b', { status: 'FAILURE', result: exc }], ['c', { status: 'REVOKED', result: exc }]]));
    expect(state).toEqual({ kind: 'failed', culpritId: 'b', error: exc });
    expect(chordErrorOf(exc)).toEqual({ exc_type: 'ChordError', exc_message: ["ValueError('boom')"], exc_module: 'celery.exceptions' });
    expect(() => parseChordUnlock('g', { task: 't' }, 'soon', null, [])).toThrow(/interval is not a number/);
    expect(() => parseChordUnlock('g', { task: 't' }, null, null, [['x']])).toThrow(/header result 0/);
  });

  describe('chains and chords applied by the worker (as chain steps, callbacks, group members)', () => {
    const chord = (header: unknown[], body: unknown, options: Record<string, unknown> = {}) => ({
      task: 'celery.chord',
      args: [],
      kwargs: { header: { task: 'celery.group', args: [], kwargs: { tasks: header }, options: { task_id: 'grp' }, subtask_type: 'group', immutable: false }, body, kwargs: {} },
      options,
      subtask_type: 'chord',
      immutable: false,
    });
    const chain = (steps: unknown[]) => ({ task: 'celery.chain', args: [], kwargs: { tasks: steps }, options: {}, subtask_type: 'chain', immutable: false });

    it('a chord as the next chain step: chord_unlock routed as the body, header tasks with the result prepended, the rest of the chain in the body', () => {
      const last = sig('t.last', [], { task_id: 'last' });
      const body = sig('t.tsum', [], { task_id: 'body', queue: 'bodyq' });
      const applied = successCanvas({ callbacks: null, chain: [last, chord([sig('t.add', [1], { task_id: 'h1' }), sig('t.add', [2], { task_id: 'h2' })], body)] }, 10, { id: 'a', rootId: 'root' }, ids());
      const [unlock, h1, h2] = applied.publish;
      expect(applied.publish).toHaveLength(3);
      expect(unlock.spec).toMatchObject({ task: 'celery.chord_unlock', countdown: 1, rootId: 'root', parentId: 'a', ignoreResult: true });
      expect(unlock.route).toMatchObject({ name: 't.tsum', queue: 'bodyq' });
      expect(unlock.spec.args?.[0]).toBe('grp');
      const unlockBody = unlock.spec.args?.[1] as { options: Record<string, unknown> };
      expect(unlockBody.options).toMatchObject({ task_id: 'body', group_id: 'grp', root_id: 'root', parent_id: 'a', chain: [last] });
      expect(unlock.spec.kwargs?.result).toEqual([[['h1', null], null], [['h2', null], null]]);
      for (const [step, id, arg, index] of [[h1, 'h1', 1, 0], [h2, 'h2', 2, 1]] as const) {
        expect(step.spec).toMatchObject({ task: 't.add', id, args: [10, arg], group: 'grp', groupIndex: index, rootId: 'root', parentId: 'a' });
        expect((step.spec.embed?.chord as { options: { task_id: string } }).options.task_id).toBe('body');
        expect(step.spec.embed?.chain ?? null).toBeNull();
        expect(step.route.name).toBeUndefined();
      }
      // the SUCCESS row lists the chord's result: the body with the header's group as parent
      expect(applied.children).toEqual([[['body', [['grp', null], [[['h1', null], null], [['h2', null], null]]]], null]]);
    });

    it("chord_unlock sends the body with the body's own chain option as its embedded chain (the rest of the enclosing chain)", () => {
      const rest = [sig('t.after', [1000], { task_id: 'after' })];
      const call = parseChordUnlock('grp', sig('t.tsum', [], { task_id: 'body', chain: rest }), 1, null, [[['h1', null], null]]);
      const [body] = chordBodyCanvas(call, [7], { id: 'unlock', rootId: 'root' }, ids()).publish;
      expect(body.spec).toMatchObject({ task: 't.tsum', id: 'body', args: [[7]] });
      expect(body.spec.embed?.chain).toEqual(rest);
    });

    it('a chord whose body is a chain (Celery 5.2 sends chain(a, group, b, c) so): chord_unlock runs the chain with the values, a ChordError goes on all its steps', () => {
      const bodyChain = chain([sig('t.tsum', [], { task_id: 'b1' }), sig('t.add', [1000], { task_id: 'b2', link_error: sig('t.eb', []) })]);
      const applied = successCanvas({ callbacks: null, chain: [chord([sig('t.add', [1], { task_id: 'h1' })], bodyChain)] }, 2, { id: 'a', rootId: 'a' }, ids());
      const [unlock, h1] = applied.publish;
      expect(unlock.spec.task).toBe('celery.chord_unlock');
      expect(unlock.route.name).toBe('celery.chain');
      expect(h1.spec).toMatchObject({ id: 'h1', args: [2, 1] });
      expect(applied.children).toEqual([[['b2', [['grp', null], [[['h1', null], null]]]], null]]);
      const call = parseChordUnlock(unlock.spec.args?.[0], unlock.spec.args?.[1], 1, null, unlock.spec.kwargs?.result);
      const [first] = chordBodyCanvas(call, [3], { id: 'unlock', rootId: 'a' }, ids()).publish;
      expect(first.spec).toMatchObject({ task: 't.tsum', id: 'b1', args: [[3]] });
      expect((first.spec.embed?.chain as { options: { task_id: string } }[]).map((c) => c.options.task_id)).toEqual(['b2']);
      const targets = chordBodyFailureTargets(call);
      expect(targets.bodyId).toBe('b2');
      expect(remainingChainIds(targets.chain)).toEqual(['b1']);
      expect(targets.errbacks).toHaveLength(1);
    });

    it('a chain as a callback: its first step with the result prepended and the rest as its embedded chain; children the last step with its parents', () => {
      const applied = successCanvas({ callbacks: [chain([sig('t.b', [1], { task_id: 'b' }), sig('t.c', [], { task_id: 'c' })])], chain: null }, 'r', { id: 'a', rootId: 'root' }, ids());
      expect(applied.publish).toHaveLength(1);
      expect(applied.publish[0].spec).toMatchObject({ task: 't.b', id: 'b', args: ['r', 1], parentId: 'a', rootId: 'root' });
      expect((applied.publish[0].spec.embed?.chain as { options: Record<string, unknown> }[]).map((s) => [s.options.task_id, s.options.root_id])).toEqual([['c', 'root']]);
      expect(applied.children).toEqual([[['c', [['b', null], null]], null]]);
    });

    it('an immutable chain as a callback gets nothing prepended', () => {
      const applied = successCanvas({ callbacks: [{ ...chain([sig('t.b', [1], { task_id: 'b' })]), immutable: true }], chain: null }, 'r', { id: 'a', rootId: 'a' }, ids());
      expect(applied.publish[0].spec.args).toEqual([1]);
    });

    it('a chain inside a group of callbacks: its last step is the group member', () => {
      const applied = successCanvas(
        { callbacks: [sig('t.x', [], { task_id: 'x' }), chain([sig('t.b', [], { task_id: 'b' }), sig('t.c', [], { task_id: 'c' })])], chain: null },
        5,
        { id: 'a', rootId: 'a' },
        () => 'g',
      );
      expect(applied.publish.map((p) => [p.spec.id, p.spec.args, p.spec.group, p.spec.groupIndex])).toEqual([
        ['x', [5], 'g', 0],
        ['b', [5], null, null],
      ]);
      const embedded = (applied.publish[1].spec.embed?.chain as { options: Record<string, unknown> }[])[0].options;
      expect(embedded).toMatchObject({ task_id: 'c', group_id: 'g', group_index: 1 });
      expect(applied.children).toEqual([[['g', null], [[['x', null], null], [['c', [['b', null], null]], null]]]]);
    });

    it('a chord as a callback: the header gets the result; a chord inside a group and a chain followed by more steps are refused by name', () => {
      const applied = successCanvas({ callbacks: [chord([sig('t.h', [], { task_id: 'h' })], sig('t.body', [], { task_id: 'body' }))], chain: null }, 3, { id: 'a', rootId: 'a' }, ids());
      expect(applied.publish.map((p) => [p.spec.task, p.spec.args])).toEqual([
        ['celery.chord_unlock', expect.any(Array)],
        ['t.h', [3]],
      ]);
      expect(() =>
        successCanvas({ callbacks: [sig('t.x', []), chord([sig('t.h', [])], sig('t.body', []))], chain: null }, 3, { id: 'a', rootId: 'a' }, ids()),
      ).toThrow(/a chord inside a group is not supported by the NestJS worker/);
      expect(() => successCanvas({ callbacks: null, chain: [sig('t.z', []), chain([sig('t.b', [])])] }, 3, { id: 'a', rootId: 'a' }, ids())).toThrow(/a chain as a chain step is not supported/);
    });
  });
});
