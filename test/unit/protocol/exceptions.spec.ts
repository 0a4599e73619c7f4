import { TaskFailedError, TaskNotRegisteredError } from '../../../lib/errors/celery.errors';
import {
  celeryException,
  isExceptionInfo,
  JS_EXCEPTION_MODULE,
  toExceptionInfo,
  tracebackOf,
} from '../../../lib/protocol/exceptions';
import { pythonJsonDumps } from '../../../lib/protocol/python-json';
import { loadVector } from '../../support/vectors';

class SortFailedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SortFailedError';
  }
}

/** An error carrying Celery's exception fields, as a re-thrown TaskFailedError does. */
function pythonError(excType: unknown, excModule: unknown, excMessage?: unknown): Error {
  return Object.assign(new Error('js message'), { excType, excModule, excMessage });
}

describe('toExceptionInfo: JavaScript built-in errors', () => {
  it('maps Error to builtins.Exception with the message as the only argument', () => {
    expect(toExceptionInfo(new Error('boom'))).toEqual({ exc_type: 'Exception', exc_message: ['boom'], exc_module: 'builtins' });
  });

  it('maps TypeError to builtins.TypeError', () => {
    expect(toExceptionInfo(new TypeError('bad type'))).toEqual({ exc_type: 'TypeError', exc_message: ['bad type'], exc_module: 'builtins' });
  });

  it('maps RangeError to builtins.ValueError', () => {
    expect(toExceptionInfo(new RangeError('too big'))).toEqual({ exc_type: 'ValueError', exc_message: ['too big'], exc_module: 'builtins' });
  });

  it('maps SyntaxError, ReferenceError and URIError onto their Python counterparts', () => {
    expect(toExceptionInfo(new SyntaxError('s')).exc_type).toBe('SyntaxError');
    expect(toExceptionInfo(new ReferenceError('r')).exc_type).toBe('NameError');
    expect(toExceptionInfo(new URIError('u')).exc_type).toBe('ValueError');
    expect(toExceptionInfo(new ReferenceError('r')).exc_module).toBe('builtins');
  });

  it('keeps an empty message as one empty-string argument', () => {
    expect(toExceptionInfo(new Error()).exc_message).toEqual(['']);
  });

  it('writes the keys in Celery order, giving the exact FAILURE blob text of wire spec §8.5', () => {
    const rows = loadVector<{ FAILURE: { blob_text: { result: string } } }>('rows_new.json');
    expect(pythonJsonDumps(toExceptionInfo(new RangeError('sortWords failed: DB unavailable')))).toBe(rows.FAILURE.blob_text.result);
  });
});

describe('toExceptionInfo: custom errors', () => {
  it(`puts an error class with its own name into the dynamic module ${JS_EXCEPTION_MODULE}`, () => {
    expect(toExceptionInfo(new SortFailedError('DB unavailable'))).toEqual({
      exc_type: 'SortFailedError',
      exc_message: ['DB unavailable'],
      exc_module: 'nestjs_celery.errors',
    });
  });

  it("uses the library's own error names (TaskNotRegisteredError) with the dynamic module", () => {
    expect(toExceptionInfo(new TaskNotRegisteredError('tasks.x'))).toEqual({
      exc_type: 'TaskNotRegisteredError',
      exc_message: ['Task not registered: tasks.x'],
      exc_module: 'nestjs_celery.errors',
    });
  });

  it('treats a subclass that does not set name as a plain Error (builtins.Exception)', () => {
    class Quiet extends Error {}
    expect(toExceptionInfo(new Quiet('q'))).toEqual({ exc_type: 'Exception', exc_message: ['q'], exc_module: 'builtins' });
  });

  it('falls back to builtins.Exception for a name that is not a Python identifier', () => {
    const err = new Error('x');
    err.name = 'my-error name';
    expect(toExceptionInfo(err)).toEqual({ exc_type: 'Exception', exc_message: ['x'], exc_module: 'builtins' });
  });
});

describe('toExceptionInfo: excType / excModule carried by the error', () => {
  it('passes excType, excModule and excMessage through unchanged', () => {
    expect(toExceptionInfo(pythonError('NotRegistered', 'celery.exceptions', ['tasks.noSuchTask']))).toEqual({
      exc_type: 'NotRegistered',
      exc_message: ['tasks.noSuchTask'],
      exc_module: 'celery.exceptions',
    });
  });

  it('re-raises a TaskFailedError with the original Python exception fields', () => {
    const failed = new TaskFailedError('id-1', 'FAILURE', 'TimeLimitExceeded', [300.5], 'billiard.exceptions', 'tb');
    expect(toExceptionInfo(failed)).toEqual({ exc_type: 'TimeLimitExceeded', exc_message: [300.5], exc_module: 'billiard.exceptions' });
  });

  it('keeps a dotted (nested class) excType', () => {
    expect(toExceptionInfo(pythonError('Outer.Inner', 'app.errors', ['m']))).toEqual({
      exc_type: 'Outer.Inner',
      exc_message: ['m'],
      exc_module: 'app.errors',
    });
  });

  it('uses the error message when excMessage is not a list', () => {
    expect(toExceptionInfo(pythonError('KeyError', 'builtins', 'not a list')).exc_message).toEqual(['js message']);
  });

  it(`uses ${JS_EXCEPTION_MODULE} when excModule is missing, null or empty`, () => {
    expect(toExceptionInfo(pythonError('CustomThing', undefined)).exc_module).toBe(JS_EXCEPTION_MODULE);
    expect(toExceptionInfo(new TaskFailedError('i', 'FAILURE', 'CustomThing', ['m'], null, null)).exc_module).toBe(JS_EXCEPTION_MODULE);
    expect(toExceptionInfo(pythonError('CustomThing', '')).exc_module).toBe(JS_EXCEPTION_MODULE);
  });

  it('keeps builtins for a real Python builtin exception name', () => {
    for (const name of ['ValueError', 'KeyError', 'RuntimeError', 'ZeroDivisionError', 'Exception']) {
      expect(toExceptionInfo(pythonError(name, 'builtins', ['m'])).exc_module).toBe('builtins');
    }
  });

  it('moves a builtins name that is not a Python exception (object, print, MyError) to the dynamic module, avoiding SecurityError', () => {
    for (const name of ['object', 'print', 'MyError', 'int']) {
      expect(toExceptionInfo(pythonError(name, 'builtins', ['m']))).toEqual({
        exc_type: name,
        exc_message: ['m'],
        exc_module: JS_EXCEPTION_MODULE,
      });
    }
  });

  it('ignores an excType that is not a Python identifier and maps the JS error instead', () => {
    const err = Object.assign(new TypeError('t'), { excType: 'not valid!', excModule: 'x' });
    expect(toExceptionInfo(err)).toEqual({ exc_type: 'TypeError', exc_message: ['t'], exc_module: 'builtins' });
  });
});

describe('toExceptionInfo: values thrown that are not Errors', () => {
  it('wraps a thrown string as builtins.Exception with that string', () => {
    expect(toExceptionInfo('oops')).toEqual({ exc_type: 'Exception', exc_message: ['oops'], exc_module: 'builtins' });
  });

  it('stringifies other thrown values', () => {
    expect(toExceptionInfo(42).exc_message).toEqual(['42']);
    expect(toExceptionInfo(undefined).exc_message).toEqual(['undefined']);
    expect(toExceptionInfo(null).exc_message).toEqual(['null']);
    expect(toExceptionInfo({ code: 1 }).exc_message).toEqual(['[object Object]']);
  });

  it('survives a thrown value whose toString throws', () => {
    const hostile = { toString(): string { throw new Error('no'); } };
    expect(toExceptionInfo(hostile)).toEqual({ exc_type: 'Exception', exc_message: ['unprintable error'], exc_module: 'builtins' });
  });

  it('handles an object without a prototype', () => {
    expect(toExceptionInfo(Object.create(null))).toEqual({ exc_type: 'Exception', exc_message: ['unprintable error'], exc_module: 'builtins' });
  });
});

describe('celeryException', () => {
  it('builds the NotRegistered dict of wire spec §8.6', () => {
    expect(celeryException('NotRegistered', 'tasks.noSuchTask')).toEqual({
      exc_type: 'NotRegistered',
      exc_message: ['tasks.noSuchTask'],
      exc_module: 'celery.exceptions',
    });
  });

  it('builds the TaskRevokedError dicts of wire spec §8.6 (revoked, expired)', () => {
    expect(celeryException('TaskRevokedError', 'revoked')).toEqual({
      exc_type: 'TaskRevokedError',
      exc_message: ['revoked'],
      exc_module: 'celery.exceptions',
    });
    expect(celeryException('TaskRevokedError', 'expired').exc_message).toEqual(['expired']);
  });

  it('serializes to exactly the result blob texts a Python worker wrote', () => {
    expect(pythonJsonDumps(celeryException('NotRegistered', 'tasks.noSuchTask'))).toBe(
      '{"exc_type": "NotRegistered", "exc_message": ["tasks.noSuchTask"], "exc_module": "celery.exceptions"}',
    );
    expect(pythonJsonDumps(celeryException('TaskRevokedError', 'expired'))).toBe(
      '{"exc_type": "TaskRevokedError", "exc_message": ["expired"], "exc_module": "celery.exceptions"}',
    );
  });
});

describe('tracebackOf / isExceptionInfo', () => {
  it('returns the stack of an Error and null for anything else', () => {
    const err = new Error('e');
    expect(tracebackOf(err)).toBe(err.stack);
    expect(tracebackOf('e')).toBeNull();
    expect(tracebackOf({ stack: 'fake' })).toBeNull();
  });

  it('recognises the exception dict by a string exc_type', () => {
    expect(isExceptionInfo({ exc_type: 'ValueError', exc_message: [], exc_module: 'builtins' })).toBe(true);
    expect(isExceptionInfo({ exc_type: 1 })).toBe(false);
    expect(isExceptionInfo('ValueError')).toBe(false);
    expect(isExceptionInfo(null)).toBe(false);
    expect(isExceptionInfo(['exc_type'])).toBe(false);
  });
});
