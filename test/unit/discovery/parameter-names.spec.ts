import { bindArguments, parameterNames, ParameterList } from '../../../lib/discovery/parameter-names';

// The functions below are compiled by ts-jest with the project's tsconfig (ES2022, comments kept),
// so parameterNames reads the same JavaScript source a real @Task method has at run time.

/* eslint-disable @typescript-eslint/no-unused-vars */
class Tasks {
  sortWords(text: string, capitalize = false): string {
    return capitalize ? text.toUpperCase() : text;
  }

  noParams(): number {
    return 1;
  }

  defaults(list = [1, 2], options = { a: 1, b: 2 }, label = 'a,b)', max = Math.max(1, 2), tpl = `x${1},(`): unknown[] {
    return [list, options, label, max, tpl];
  }

  destructured({ a, b }: { a: number; b: number }, [c, d]: number[], e: number): number {
    return a + b + c + d + e;
  }

  withRest(first: string, ...rest: number[]): unknown[] {
    return [first, rest];
  }

  withBlockComment(a: number /* , fake */, b: number): number {
    return a + b;
  }

  withLineComment(
    a: number, // the first, with a comma
    b: number,
  ): number {
    return a + b;
  }

  withApostropheInComment(a: number /* don't */, b: number): number {
    return a + b;
  }

  async asyncTask(url: string, retries = 3): Promise<string> {
    return `${url}${retries}`;
  }

  arrowProperty = (x: number, y: number): number => x + y;

  typed(a: Map<string, number>, b: Record<string, [number, number]>, c?: string): void {}
}
/* eslint-enable @typescript-eslint/no-unused-vars */

const tasks = new Tasks();

describe('parameterNames', () => {
  it('reads the names of a method with a default value', () => {
    expect(parameterNames(Tasks.prototype.sortWords)).toEqual({ names: ['text', 'capitalize'], restIndex: null });
  });

  it('reads no names for a method without parameters', () => {
    expect(parameterNames(Tasks.prototype.noParams)).toEqual({ names: [], restIndex: null });
  });

  it('is not confused by commas and brackets inside default values (arrays, objects, strings, calls, templates)', () => {
    expect(parameterNames(Tasks.prototype.defaults).names).toEqual(['list', 'options', 'label', 'max', 'tpl']);
  });

  it('reports destructuring patterns as null and keeps the positions of later names', () => {
    expect(parameterNames(Tasks.prototype.destructured).names).toEqual([null, null, 'e']);
  });

  it('reports a rest parameter by name and its index', () => {
    expect(parameterNames(Tasks.prototype.withRest)).toEqual({ names: ['first', 'rest'], restIndex: 1 });
  });

  it('reads the names of an async method', () => {
    expect(parameterNames(Tasks.prototype.asyncTask).names).toEqual(['url', 'retries']);
  });

  it('reads the names of an arrow-function property', () => {
    expect(parameterNames(tasks.arrowProperty).names).toEqual(['x', 'y']);
  });

  it('ignores TypeScript types, generics and optional markers (they are compiled away)', () => {
    expect(parameterNames(Tasks.prototype.typed).names).toEqual(['a', 'b', 'c']);
  });

  it('ignores a block comment between parameters, even one containing a comma', () => {
    expect(parameterNames(Tasks.prototype.withBlockComment).names).toEqual(['a', 'b']);
  });

  it('ignores a line comment between parameters, even one containing a comma', () => {
    expect(parameterNames(Tasks.prototype.withLineComment).names).toEqual(['a', 'b']);
  });

  it('ignores an apostrophe inside a comment between parameters', () => {
    expect(parameterNames(Tasks.prototype.withApostropheInComment).names).toEqual(['a', 'b']);
  });

  it('reads plain functions and anonymous function expressions', () => {
    function named(alpha: number, beta: number): number {
      return alpha + beta;
    }
    expect(parameterNames(named).names).toEqual(['alpha', 'beta']);
    expect(parameterNames(function (gamma: number) { return gamma; }).names).toEqual(['gamma']);
  });

  it('reads parenthesised arrow functions, sync and async', () => {
    expect(parameterNames((a: number, b = 2) => a + b).names).toEqual(['a', 'b']);
    expect(parameterNames(async (a: number) => a).names).toEqual(['a']);
  });

  it('reads a single unparenthesised arrow parameter', () => {
    // eslint-disable-next-line no-new-func
    expect(parameterNames(new Function('return x => x')() as Function).names).toEqual(['x']);
  });

  it('reads a single unparenthesised arrow parameter whose body calls a function with several arguments', () => {
    // Source text `x => Math.max(x, 0)` as written in plain JavaScript (TS would add parentheses).
    // eslint-disable-next-line no-new-func
    const fn = new Function('return x => Math.max(x, 0)')() as Function;
    expect(parameterNames(fn)).toEqual({ names: ['x'], restIndex: null });
    // eslint-disable-next-line no-new-func
    const asyncFn = new Function('return async item => process(item, 1, 2)')() as Function;
    expect(parameterNames(asyncFn)).toEqual({ names: ['item'], restIndex: null });
  });
});

describe('bindArguments', () => {
  const sortWords = parameterNames(Tasks.prototype.sortWords);

  it('returns the positional arguments unchanged when there are no kwargs', () => {
    const args = ['a b', true];
    expect(bindArguments('tasks.sortWords', sortWords, args, {})).toBe(args);
  });

  it('puts a keyword argument in the position of the parameter of that name', () => {
    expect(bindArguments('tasks.sortWords', sortWords, ['a b'], { capitalize: true })).toEqual(['a b', true]);
  });

  it('binds every argument by keyword, in parameter order whatever the kwargs order', () => {
    expect(bindArguments('tasks.sortWords', sortWords, [], { capitalize: true, text: 'a b' })).toEqual(['a b', true]);
  });

  it('leaves skipped parameters undefined so their JS defaults apply', () => {
    const params = parameterNames(Tasks.prototype.asyncTask);
    const bound = bindArguments('tasks.fetch', params, [], { retries: 5 });
    expect(bound).toHaveLength(2);
    expect(bound[0]).toBeUndefined();
    expect(bound[1]).toBe(5);
    const withDefault = (url = 'default-url', retries = 3) => [url, retries];
    expect(withDefault(...(bound as [string, number]))).toEqual(['default-url', 5]);
  });

  it("throws Python's TypeError for an unexpected keyword argument", () => {
    expect(() => bindArguments('tasks.sortWords', sortWords, ['a b'], { reverse: true })).toThrow(
      new TypeError("tasks.sortWords() got an unexpected keyword argument 'reverse'"),
    );
  });

  it("throws Python's TypeError when a keyword repeats a positional argument", () => {
    expect(() => bindArguments('tasks.sortWords', sortWords, ['a b'], { text: 'c d' })).toThrow(
      new TypeError("tasks.sortWords() got multiple values for argument 'text'"),
    );
  });

  it('refuses a keyword naming the rest parameter, as Python refuses *args by name', () => {
    const params = parameterNames(Tasks.prototype.withRest);
    expect(() => bindArguments('tasks.rest', params, [], { rest: [1] })).toThrow("tasks.rest() got an unexpected keyword argument 'rest'");
    expect(bindArguments('tasks.rest', params, [], { first: 'f' })).toEqual(['f']);
  });

  it('cannot bind a keyword to a destructured parameter (it has no name)', () => {
    const params: ParameterList = parameterNames(Tasks.prototype.destructured);
    expect(() => bindArguments('tasks.d', params, [], { a: 1 })).toThrow(/unexpected keyword argument 'a'/);
    expect(bindArguments('tasks.d', params, [{ a: 1, b: 2 }, [3, 4]], { e: 5 })).toEqual([{ a: 1, b: 2 }, [3, 4], 5]);
  });

  it('binds keywords to methods whose parameters carry comments', () => {
    const params = parameterNames(Tasks.prototype.withBlockComment);
    expect(bindArguments('tasks.add', params, [1], { b: 2 })).toEqual([1, 2]);
  });
});
