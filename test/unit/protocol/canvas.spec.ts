import { InvalidSignatureError, groupSignature, planChain, planChord, planGroup, chainSignature, Signature, signatureFromDict, signatureToDict, FreezeContext } from '../../../lib/protocol/canvas';
import { saferepr, PyTuple } from '../../../lib/protocol/saferepr';
import { CaptureFile, loadVector } from '../../support/vectors';

function counter(): FreezeContext {
  let n = 0;
  return { replyTo: 'oid', newId: () => `id-${++n}` };
}

describe('signature dicts', () => {
  it('writes the 6 keys in Celery order, options as Celery freezes them, nested signatures as dicts', () => {
    const sig = new Signature('tasks.add', [2]).set({ queue: 'q', countdown: 5 }).link(new Signature('tasks.echo')).linkError(new Signature('tasks.err').setImmutable());
    sig.freeze(counter(), { groupId: 'g', groupIndex: 0 });
    const d = signatureToDict(sig);
    expect(Object.keys(d)).toEqual(['task', 'args', 'kwargs', 'options', 'subtask_type', 'immutable']);
    expect(Object.keys(d.options)).toEqual(['queue', 'countdown', 'link', 'link_error', 'task_id', 'reply_to', 'group_id', 'group_index']);
    expect(d.options.link).toEqual([{ task: 'tasks.echo', args: [], kwargs: {}, options: {}, subtask_type: null, immutable: false }]);
    expect((d.options.link_error as { immutable: boolean }[])[0].immutable).toBe(true);
  });

  it('reads back what Python sends (every signature in the captured messages) unchanged', () => {
    const capture = loadVector<CaptureFile>('capture_new.json');
    const dicts: unknown[] = [];
    for (const m of capture.messages) {
      const [args, , embed] = JSON.parse(m.body);
      for (const s of embed.chain ?? []) dicts.push(s);
      if (embed.chord) dicts.push(embed.chord);
      if (m.headers.task === 'celery.chord_unlock') dicts.push(args[1]);
    }
    expect(dicts.length).toBe(4);
    for (const d of dicts) expect(signatureToDict(signatureFromDict(d))).toEqual(d);
  });

  it('reads a Python chain / group / chord signature with its nested tasks', () => {
    const add = { task: 'tasks.add', args: [1], kwargs: {}, options: { link: { task: 'tasks.echo', args: [], kwargs: {}, options: {}, subtask_type: null, immutable: false } }, subtask_type: null, immutable: false };
    const chord = { task: 'celery.chord', args: [], kwargs: { kwargs: {}, header: [add], body: add }, options: {}, subtask_type: 'chord', immutable: false };
    const sig = signatureFromDict(chord);
    expect(sig.subtaskType).toBe('chord');
    expect((sig.kwargs.header as Signature[])[0]).toBeInstanceOf(Signature);
    expect(((sig.kwargs.body as Signature).options.link as Signature)).toBeInstanceOf(Signature);
    expect(signatureToDict(sig)).toEqual(chord);
  });

  it.each([
    [null, 'expected a signature dict'],
    [{ args: [] }, '"task" is not a non-empty string'],
    [{ task: 't', args: 'x' }, 'signature t: "args" is not a list'],
    [{ task: 't', kwargs: [] }, '"kwargs" is not a mapping'],
    [{ task: 't', options: 3 }, '"options" is not a mapping'],
    [{ task: 't', subtask_type: 'weird' }, '"subtask_type" "weird" is not one of'],
    [{ task: 't', immutable: 'yes' }, '"immutable" is not a boolean'],
    [{ task: 't', options: { task_id: 5 } }, 'options.task_id is not a string'],
    [{ task: 't', options: { link: [{ task: 5 }] } }, 'options.link[0]: "task" is not a non-empty string'],
    [{ task: 'celery.chain', subtask_type: 'chain', kwargs: {} }, 'a chain needs kwargs.tasks as a list'],
  ])('names what is wrong: %j', (input, message) => {
    expect(() => signatureFromDict(input)).toThrow(InvalidSignatureError);
    expect(() => signatureFromDict(input)).toThrow(message);
  });

  it('rejects an unknown option name', () => {
    expect(() => new Signature('t').set({ nope: 1 } as never)).toThrow('unknown option "nope"');
  });
});

describe('saferepr of tuples', () => {
  it('prints Python tuples, with the 1-tuple comma', () => {
    expect(saferepr(new PyTuple(['a', false]))).toBe("('a', False)");
    expect(saferepr(new PyTuple([false]))).toBe('(False,)');
    expect(saferepr(new PyTuple([]))).toBe('()');
  });
});

describe('planChain', () => {
  it('freezes every step and puts the rest in embed.chain, last element next; partial args go to the first step', () => {
    const plan = planChain([new Signature('a'), new Signature('b', [1]), new Signature('c').setImmutable()], counter(), { args: [7] });
    // frozen last to first, as Celery
    expect(plan.ids).toEqual(['id-3', 'id-2', 'id-1']);
    expect(plan.id).toBe('id-1');
    const [m] = plan.messages;
    expect(m.spec.id).toBe('id-3');
    expect(m.spec.args).toEqual([7]);
    expect((m.spec.embed?.chain as { task: string }[]).map((s) => s.task)).toEqual(['c', 'b']);
  });

  it("does not change the caller's signatures (they can be sent again with new ids)", () => {
    const a = new Signature('a');
    planChain([a, new Signature('b')], counter());
    expect(a.options).toEqual({});
  });

  it('splices a nested chain', () => {
    const plan = planChain([new Signature('a'), chainSignature([new Signature('b'), new Signature('c')])], counter());
    expect(plan.ids).toHaveLength(3);
  });

  it('upgrades a group followed by a task to a chord (chord_unlock, header with embed.chord) and keeps the rest of the chain on the body', () => {
    const plan = planChain([groupSignature([new Signature('x'), new Signature('y')]), new Signature('tsum'), new Signature('after')], counter());
    expect(plan.messages.map((m) => m.spec.task)).toEqual(['celery.chord_unlock', 'x', 'y']);
    const body = (plan.messages[0].spec.args as unknown[])[1] as { task: string; options: { task_id: string; chain: { task: string }[] } };
    expect(body.task).toBe('tsum');
    expect(body.options.chain.map((s) => s.task)).toEqual(['after']);
    expect(plan.ids[0]).toBe(body.options.task_id);
    expect(plan.id).toBe(plan.ids[1]);
    expect(plan.messages[1].spec.embed?.chord).toMatchObject({ task: 'tsum' });
  });

  it('refuses an empty chain', () => {
    expect(() => planChain([], counter())).toThrow('chain: needs at least one signature');
  });
});

describe('planGroup', () => {
  it('new group id, group_index per member; 5.2 peers get none; a chain member carries the group on its last step', () => {
    const plan = planGroup([new Signature('a'), chainSignature([new Signature('b'), new Signature('c')])], counter());
    expect(plan.messages[0].spec).toMatchObject({ task: 'a', group: plan.groupId, groupIndex: 0 });
    expect(plan.messages[1].spec).toMatchObject({ task: 'b', group: null });
    const last = (plan.messages[1].spec.embed?.chain as { options: Record<string, unknown> }[])[0];
    expect(last.options).toMatchObject({ group_id: plan.groupId, group_index: 1, task_id: plan.ids[1] });
    const old = planGroup([new Signature('a')], { ...counter(), peer: '5.2' });
    expect(old.messages[0].spec.groupIndex).toBeNull();
  });
});

describe('messageOf / planChord details', () => {
  it('maps every option to the message as Celery apply_async does (link → callbacks, link_error → errbacks)', () => {
    const sig = new Signature('t', [1], { k: 'v' })
      .set({ countdown: 5, expires: 60, priority: 3, timeLimit: 30, softTimeLimit: 20, ignoreResult: true, shadow: 'alias', queue: 'q', exchange: 'ex', routingKey: 'rk' })
      .link(new Signature('cb'))
      .linkError(new Signature('eb'));
    sig.freeze(counter(), { rootId: 'root', parentId: 'parent' });
    const plan = planChain([sig], counter());
    const { spec, route } = plan.messages[0];
    expect(spec).toMatchObject({ id: 'id-1', countdown: 5, expires: 60, priority: 3, timeLimit: 30, softTimeLimit: 20, ignoreResult: true, shadow: 'alias', rootId: 'root', parentId: 'parent', kwargsrepr: "{'k': 'v'}", argsrepr: '(1,)' });
    expect(spec.embed).toMatchObject({ callbacks: [{ task: 'cb' }], errbacks: [{ task: 'eb' }], chain: [], chord: null });
    expect(route).toEqual({ name: 't', queue: 'q', exchange: 'ex', routingKey: 'rk' });
  });

  it('writes a Date eta / expires as the ISO form Python passes through', () => {
    const sig = new Signature('t').set({ eta: new Date(Date.UTC(2025, 0, 15, 12, 0, 0, 123)), expires: new Date(Date.UTC(2025, 0, 15, 13)) });
    expect(sig.options).toEqual({ eta: '2025-01-15T12:00:00.123000+00:00', expires: '2025-01-15T13:00:00.000000+00:00' });
  });

  it('an immutable first step keeps its own args', () => {
    const plan = planChain([new Signature('t', [1]).si()], counter(), { args: [9] });
    expect(plan.messages[0].spec.args).toEqual([1]);
  });

  it('a chord with an empty header sends the body at once with []', () => {
    const plan = planChord([], new Signature('tsum'), counter());
    expect(plan.messages).toHaveLength(1);
    expect(plan.messages[0].spec).toMatchObject({ task: 'tsum', args: [[]], id: plan.id });
  });

  it('a 5.2 peer gets no group_id in the body options; the body priority goes to chord_unlock', () => {
    const plan = planChord([new Signature('a')], new Signature('tsum').set({ priority: 5 }), { ...counter(), peer: '5.2' });
    const body = (plan.messages[0].spec.args as unknown[])[1] as { options: Record<string, unknown> };
    expect(body.options.group_id).toBeUndefined();
    expect(plan.messages[0].spec.priority).toBe(5);
  });

  it('a chain as the body: every step frozen, the last is the body id; the header tasks carry the chain as their chord', () => {
    const plan = planChord([new Signature('a')], chainSignature([new Signature('b'), new Signature('c')]), counter());
    const bodySteps = ((plan.messages[0].spec.args as unknown[])[1] as { kwargs: { tasks: { task: string; options: { task_id: string } }[] } }).kwargs.tasks;
    expect(bodySteps.map((t) => t.task)).toEqual(['b', 'c']);
    expect(plan.id).toBe(bodySteps[1].options.task_id);
    expect(bodySteps[0].options.task_id).toEqual(expect.any(String));
    expect((plan.messages[1].spec.embed?.chord as { subtask_type: string }).subtask_type).toBe('chain');
  });

  it('refuses what it cannot send, naming it', () => {
    expect(() => planChord([new Signature('a')], groupSignature([new Signature('b')]), counter())).toThrow('the body is a group; only a task or a chain is supported');
    expect(() => planChord([chainSignature([new Signature('b')])], new Signature('c'), counter())).toThrow('member 0 is a chain');
    expect(() => planChain([new Signature('a'), 'x' as never], counter())).toThrow('chain: item 1 is not a Signature');
  });
});

describe('a group as the last chain step', () => {
  it('is frozen as Celery freezes it (group id as task_id, root_id / parent_id null, members with ids and indexes) and rides in embed.chain', () => {
    const plan = planChain([new Signature('a', [1]), groupSignature([new Signature('b'), new Signature('c')])], counter());
    expect(plan.messages).toHaveLength(1);
    const [group] = plan.messages[0].spec.embed?.chain as { task: string; options: Record<string, unknown>; kwargs: { tasks: { options: Record<string, unknown> }[] }; subtask_type: string }[];
    expect(group).toMatchObject({ task: 'celery.group', subtask_type: 'group', options: { task_id: plan.id, root_id: null, parent_id: null } });
    expect(group.kwargs.tasks.map((t) => t.options)).toEqual([
      { task_id: plan.groupMembers?.[0], reply_to: 'oid', group_index: 0 },
      { task_id: plan.groupMembers?.[1], reply_to: 'oid', group_index: 1 },
    ]);
    expect(plan.ids).toEqual([plan.messages[0].spec.id, plan.id]);
  });

  it('a chain of only a group is a group', () => {
    const plan = planChain([groupSignature([new Signature('b'), new Signature('c')])], counter());
    expect(plan.messages.map((m) => [m.spec.task, m.spec.group])).toEqual([['b', plan.id], ['c', plan.id]]);
    expect(plan.groupMembers).toHaveLength(2);
  });

  it('refuses a group in the middle of a chain not followed by a task', () => {
    expect(() => planChain([new Signature('a'), groupSignature([new Signature('b')]), groupSignature([new Signature('c')])], counter())).toThrow('a group at step 1 is not supported here');
  });
});
