/**
 * Celery's exception dict, `{"exc_type", "exc_message": [...], "exc_module"}` (wire spec §3.2), to
 * and from JavaScript errors. Python rebuilds the class from `exc_module` + `exc_type`; it must never
 * name a non-exception (Python then raises SecurityError), so JS errors map onto `builtins`
 * exceptions where one fits, and otherwise onto a module Python does not have loaded, which makes
 * Celery create a dynamic exception class of that name.
 */
export interface ExceptionInfo {
  exc_type: string;
  exc_message: unknown[];
  exc_module: string;
}

/** Module name for JS errors without a Python counterpart (a dynamic exception class in Python). */
export const JS_EXCEPTION_MODULE = 'nestjs_celery.errors';

const JS_TO_PYTHON: Record<string, string> = {
  Error: 'Exception',
  TypeError: 'TypeError',
  RangeError: 'ValueError',
  SyntaxError: 'SyntaxError',
  ReferenceError: 'NameError',
  EvalError: 'Exception',
  URIError: 'ValueError',
  AggregateError: 'Exception',
};

/** Python builtin exception names that are safe to write with `exc_module: "builtins"`. */
const PYTHON_BUILTIN_EXCEPTIONS = new Set([
  'BaseException', 'Exception', 'ArithmeticError', 'AssertionError', 'AttributeError', 'BufferError',
  'EOFError', 'FloatingPointError', 'ImportError', 'IndexError', 'KeyError', 'KeyboardInterrupt',
  'LookupError', 'MemoryError', 'ModuleNotFoundError', 'NameError', 'NotImplementedError', 'OSError',
  'OverflowError', 'RecursionError', 'ReferenceError', 'RuntimeError', 'StopIteration', 'SyntaxError',
  'SystemError', 'TimeoutError', 'TypeError', 'UnboundLocalError', 'UnicodeError', 'ValueError',
  'ZeroDivisionError', 'ConnectionError', 'PermissionError', 'FileNotFoundError', 'FileExistsError',
  'IOError', 'EnvironmentError', 'UnicodeDecodeError', 'UnicodeEncodeError',
]);

const PYTHON_IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/;

/**
 * The exception dict for anything a task threw. An error may name its Python class itself with
 * `excType` / `excModule` properties (a re-thrown TaskFailedError does); a `builtins` name that is
 * not a Python builtin exception is moved to the dynamic module.
 */
export function toExceptionInfo(thrown: unknown): ExceptionInfo {
  if (!(thrown instanceof Error)) {
    return { exc_type: 'Exception', exc_message: [safeMessage(thrown)], exc_module: 'builtins' };
  }
  const named = thrown as Error & { excType?: unknown; excModule?: unknown; excMessage?: unknown };
  const message: unknown[] = Array.isArray(named.excMessage) ? named.excMessage : [thrown.message];
  if (typeof named.excType === 'string' && PYTHON_IDENTIFIER.test(named.excType)) {
    const module = typeof named.excModule === 'string' && named.excModule ? named.excModule : JS_EXCEPTION_MODULE;
    return { exc_type: named.excType, exc_message: message, exc_module: safeModule(named.excType, module) };
  }
  const mapped = JS_TO_PYTHON[thrown.name];
  if (mapped) return { exc_type: mapped, exc_message: message, exc_module: 'builtins' };
  const type = PYTHON_IDENTIFIER.test(thrown.name) ? thrown.name : 'Exception';
  return { exc_type: type, exc_message: message, exc_module: type === 'Exception' ? 'builtins' : JS_EXCEPTION_MODULE };
}

function safeModule(type: string, module: string): string {
  if (module === 'builtins' && !PYTHON_BUILTIN_EXCEPTIONS.has(type)) return JS_EXCEPTION_MODULE;
  return module;
}

function safeMessage(value: unknown): string {
  try {
    return typeof value === 'string' ? value : String(value);
  } catch {
    return 'unprintable error';
  }
}

/** The traceback text stored beside a FAILURE: the JS stack. */
export function tracebackOf(thrown: unknown): string | null {
  return thrown instanceof Error && typeof thrown.stack === 'string' ? thrown.stack : null;
}

/** True when a decoded result value has the shape of Celery's exception dict. */
export function isExceptionInfo(value: unknown): value is ExceptionInfo {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { exc_type?: unknown }).exc_type === 'string'
  );
}

/** Celery's own exceptions as written by its workers (NotRegistered, TaskRevokedError). */
export function celeryException(type: 'NotRegistered' | 'TaskRevokedError', message: string): ExceptionInfo {
  return { exc_type: type, exc_message: [message], exc_module: 'celery.exceptions' };
}
