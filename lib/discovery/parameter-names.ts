/**
 * Parameter names of a function, read from its source, so Python callers' keyword arguments can
 * be bound by name. `null` marks a parameter that has no plain name (a destructuring pattern);
 * a rest parameter is reported with `rest: true`.
 */
export interface ParameterList {
  names: (string | null)[];
  restIndex: number | null;
}

export function parameterNames(fn: Function): ParameterList {
  const source = Function.prototype.toString.call(fn);
  // `x => ...` (a single unparenthesised parameter; its body may hold parentheses)
  const arrow = /^\s*(?:async\s+)?([A-Za-z_$][\w$]*)\s*=>/.exec(source);
  if (arrow) return { names: [arrow[1]], restIndex: null };
  const open = source.indexOf('(');
  if (open < 0) return { names: [], restIndex: null };
  const params = splitTopLevel(source, open);
  const names: (string | null)[] = [];
  let restIndex: number | null = null;
  params.forEach((raw, index) => {
    const text = stripComments(raw).trim();
    if (!text) return;
    if (text.startsWith('...')) {
      restIndex = index;
      const m = /^\.\.\.\s*([A-Za-z_$][\w$]*)/.exec(text);
      names.push(m ? m[1] : null);
      return;
    }
    const m = /^([A-Za-z_$][\w$]*)/.exec(text);
    names.push(m ? m[1] : null);
  });
  return { names, restIndex };
}

/** Splits the text between the parenthesis at `open` and its partner on top-level commas. */
function splitTopLevel(source: string, open: number): string[] {
  const parts: string[] = [];
  let depth = 0;
  let current = '';
  let quote: string | null = null;
  for (let i = open + 1; i < source.length; i++) {
    const ch = source[i];
    if (quote) {
      current += ch;
      if (ch === '\\') current += source[++i] ?? '';
      else if (ch === quote) quote = null;
      continue;
    }
    if (ch === '/' && (source[i + 1] === '*' || source[i + 1] === '/')) {
      // Comments are kept in the compiled source; skip them whole (they may hold commas or quotes).
      const end = source[i + 1] === '*' ? source.indexOf('*/', i + 2) : source.indexOf('\n', i + 2);
      i = end < 0 ? source.length : source[i + 1] === '*' ? end + 1 : end - 1;
      continue;
    }
    if (ch === '"' || ch === "'" || ch === '`') quote = ch;
    else if (ch === '(' || ch === '[' || ch === '{') depth++;
    else if (ch === ')' || ch === ']' || ch === '}') {
      if (depth === 0) {
        parts.push(current);
        return parts;
      }
      depth--;
    } else if (ch === ',' && depth === 0) {
      parts.push(current);
      current = '';
      continue;
    }
    current += ch;
  }
  parts.push(current);
  return parts;
}

function stripComments(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
}

/**
 * Python-style call binding: positional args first, then kwargs by name. Throws a TypeError with
 * Python's wording for an unknown or duplicated keyword.
 */
export function bindArguments(taskName: string, params: ParameterList, args: unknown[], kwargs: Record<string, unknown>): unknown[] {
  const keys = Object.keys(kwargs);
  if (keys.length === 0) return args;
  const bound = [...args];
  const fixed = params.restIndex ?? params.names.length;
  for (const key of keys) {
    const index = params.names.indexOf(key);
    if (index < 0 || index >= fixed) {
      throw new TypeError(`${taskName}() got an unexpected keyword argument '${key}'`);
    }
    if (index < args.length) throw new TypeError(`${taskName}() got multiple values for argument '${key}'`);
    bound[index] = kwargs[key];
  }
  return bound;
}

/** Puts the task context at its parameter's place in bound arguments (missing ones before it stay undefined: defaults apply). */
export function withContextArgument(bound: unknown[], index: number | null | undefined, context: unknown): unknown[] {
  if (index === null || index === undefined) return bound;
  const out = bound.length < index ? [...bound, ...new Array<unknown>(index - bound.length)] : [...bound];
  out.splice(index, 0, context);
  return out;
}
