import { bindArguments, parameterNames } from '../../../lib/discovery/parameter-names';
import { InvalidTaskMessageError } from '../../../lib/errors/celery.errors';
import { decodeTaskMessage, DecodedTask } from '../../../lib/protocol/task-message';

// Task bodies come from the network. Keys such as __proto__, constructor and prototype in args or
// kwargs must stay plain data: decoding must not touch Object.prototype, and binding must never
// hand such a key (or anything inherited from Object.prototype) to a parameter the task did not declare.

/* eslint-disable @typescript-eslint/no-unused-vars */
class Tasks {
  sortWords(text: string, capitalize = false): string {
    return capitalize ? text.toUpperCase() : text;
  }

  // A parameter may legitimately be called `prototype` or `constructor`: then, and only then, it binds.
  declared(prototype: unknown, constructor?: unknown): unknown[] {
    return [prototype, constructor];
  }
}
/* eslint-enable @typescript-eslint/no-unused-vars */

const ID = 'a1b2c3d4-0000-4000-8000-000000000001';
const EMBED = '{"callbacks": null, "errbacks": null, "chain": null, "chord": null}';
const HOSTILE_KEYS = ['__proto__', 'constructor', 'prototype'];

function decodeV2(args: string, kwargs: string): DecodedTask {
  return decodeTaskMessage({
    headers: { lang: 'py', task: 'tasks.sortWords', id: ID },
    contentType: 'application/json',
    contentEncoding: 'utf-8',
    body: Buffer.from(`[${args}, ${kwargs}, ${EMBED}]`, 'utf8'),
  });
}

function expectPrototypeClean(): void {
  for (const key of ['polluted', 'isAdmin', 'task', 'id']) {
    expect(Object.prototype).not.toHaveProperty(key);
    expect(({} as Record<string, unknown>)[key]).toBeUndefined();
  }
  expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(PROTOTYPE_NAMES);
  expect(Object.prototype.toString).toBe(ORIGINAL_TO_STRING);
  expect({}.constructor).toBe(Object);
}

const PROTOTYPE_NAMES = Object.getOwnPropertyNames(Object.prototype).sort();
const ORIGINAL_TO_STRING = Object.prototype.toString;
const sortWords = parameterNames(Tasks.prototype.sortWords);

afterEach(expectPrototypeClean);

describe('decoding hostile keys in task bodies', () => {
  const kwargs =
    '{"__proto__": {"polluted": true, "isAdmin": true}, "constructor": {"prototype": {"polluted": true}}, ' +
    '"prototype": {"polluted": true}}';

  it('keeps __proto__, constructor and prototype in kwargs as own data keys, leaving Object.prototype alone', () => {
    const task = decodeV2('["a b"]', kwargs);
    expectPrototypeClean();
    expect(Object.keys(task.kwargs)).toEqual(HOSTILE_KEYS);
    expect(Object.getPrototypeOf(task.kwargs)).toBe(Object.prototype);
    expect(Object.getOwnPropertyDescriptor(task.kwargs, '__proto__')?.value).toEqual({ polluted: true, isAdmin: true });
    expect((task.kwargs as Record<string, unknown>).polluted).toBeUndefined();
    expect((task.kwargs as Record<string, unknown>).isAdmin).toBeUndefined();
  });

  it('keeps them as own data keys inside args objects, nested at any depth', () => {
    const task = decodeV2('[{"__proto__": {"polluted": true}}, [{"constructor": {"prototype": {"polluted": 1}}}]]', '{}');
    const first = task.args[0] as Record<string, unknown>;
    expect(Object.keys(first)).toEqual(['__proto__']);
    expect(Object.getPrototypeOf(first)).toBe(Object.prototype);
    expect(first.polluted).toBeUndefined();
    const nested = (task.args[1] as Record<string, unknown>[])[0];
    expect(Object.getOwnPropertyDescriptor(nested, 'constructor')?.value).toEqual({ prototype: { polluted: 1 } });
  });

  it('does the same on the slow paths: bodies with NaN tokens and kombu envelopes', () => {
    const task = decodeV2(
      '[NaN, {"__proto__": {"__type__": "decimal", "__value__": "1.5"}}]',
      '{"__proto__": {"polluted": true}, "when": {"__type__": "datetime", "__value__": "2025-01-15T12:00:00+00:00"}}',
    );
    expect(task.args[0]).toBeNaN();
    expect(Object.keys(task.args[1] as object)).toEqual(['__proto__']);
    expect(Object.getPrototypeOf(task.args[1])).toBe(Object.prototype);
    expect(Object.keys(task.kwargs)).toEqual(['__proto__', 'when']);
    expect(task.kwargs.when).toBeInstanceOf(Date);
    expect((task.kwargs as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('does not let a protocol v1 body smuggle its task name or id through __proto__', () => {
    const body = '{"__proto__": {"task": "tasks.evil", "id": "smuggled"}, "args": [], "kwargs": {}}';
    let error: unknown;
    try {
      decodeTaskMessage({ headers: {}, contentType: 'application/json', body: Buffer.from(body) });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(InvalidTaskMessageError);
    expect((error as InvalidTaskMessageError).reason).toBe('no "task" header and no "task" in the body');
  });

  it('reads "__proto__" as a plain header of a v2 message, not as the headers\' prototype', () => {
    const headers = JSON.parse('{"lang": "py", "task": "tasks.sortWords", "id": "x", "__proto__": {"eta": "garbage"}}') as Record<string, unknown>;
    const task = decodeTaskMessage({ headers, contentType: 'application/json', body: Buffer.from(`[[], {}, ${EMBED}]`) });
    expect(task.eta).toBeNull();
  });
});

describe('binding hostile keyword arguments (decoded by the real decoder)', () => {
  it.each(HOSTILE_KEYS)('refuses the keyword %p for a task that does not declare it', (key) => {
    const task = decodeV2('["a b"]', `{${JSON.stringify(key)}: {"polluted": true}}`);
    expect(() => bindArguments(task.task, sortWords, task.args, task.kwargs)).toThrow(
      new TypeError(`tasks.sortWords() got an unexpected keyword argument '${key}'`),
    );
  });

  it.each(['toString', 'valueOf', 'hasOwnProperty', '__defineGetter__', 'isPrototypeOf', 'length', '0'])(
    'refuses %p, a name Object.prototype or arrays have but the task does not declare',
    (key) => {
      const task = decodeV2('[]', `{${JSON.stringify(key)}: 1}`);
      expect(() => bindArguments(task.task, sortWords, task.args, task.kwargs)).toThrow(/unexpected keyword argument/);
    },
  );

  it('binds declared parameters only, in their own positions, whatever else the kwargs hold', () => {
    const task = decodeV2('[]', '{"text": "a b", "capitalize": true}');
    const bound = bindArguments(task.task, sortWords, task.args, task.kwargs);
    expect(bound).toEqual(['a b', true]);
    expect(Object.keys(bound)).toEqual(['0', '1']);
    expect(Object.getPrototypeOf(bound)).toBe(Array.prototype);
  });

  it('passes __proto__ inside an argument value through as data, without binding it anywhere', () => {
    const task = decodeV2('[]', '{"text": {"__proto__": {"polluted": true}}}');
    const bound = bindArguments(task.task, sortWords, task.args, task.kwargs);
    expect(bound).toHaveLength(1);
    expect(Object.keys(bound[0] as object)).toEqual(['__proto__']);
    expect((bound[0] as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('binds a keyword named prototype or constructor when the task really declares such a parameter', () => {
    const params = parameterNames(Tasks.prototype.declared);
    expect(params.names).toEqual(['prototype', 'constructor']);
    const task = decodeV2('[]', '{"constructor": 2, "prototype": 1}');
    expect(bindArguments('tasks.declared', params, task.args, task.kwargs)).toEqual([1, 2]);
    expect(() => bindArguments('tasks.declared', params, [], JSON.parse('{"__proto__": 3}'))).toThrow(
      "tasks.declared() got an unexpected keyword argument '__proto__'",
    );
  });
});
