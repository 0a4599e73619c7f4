"""A Python Celery client for the interop suite. One JSON command in argv[1], one JSON answer on stdout.

ops:
  call      send_task(task, args, kwargs, queue, **options), then get(); answers the outcome
  calls     several 'call's in one process: sends them all, then answers the outcomes in order
  send      send_task only; answers the id
  get       AsyncResult(id).get(); answers the outcome
  revoke    app.control.revoke(id)
  saferepr  celery.utils.saferepr.saferepr(value, 1024) for each value
  forget    AsyncResult(id).forget() (Celery 5.7's Cassandra backend deletes the task's rows)
  meta      AsyncResult(id): state, info (value, exception or STARTED meta), traceback, children
  chain     chain(task.s(*args), task.s(*args2)) on a queue; answers the step ids
"""
import json
import sys
import traceback

from celery.result import AsyncResult
from celery.utils.saferepr import saferepr

from tasks import SPECIAL, app


def outcome(result, timeout):
    try:
        value = result.get(timeout=timeout, propagate=True)
        return {'id': result.id, 'status': result.status, 'result': describe(value)}
    except Exception as exc:  # noqa: BLE001 - the test wants whatever Celery raised
        cls = type(exc)
        return {'id': result.id, 'status': result.status, 'exc_class': f'{cls.__module__}.{cls.__qualname__}',
                'exc_args': [repr(a) for a in exc.args], 'is_exception': isinstance(exc, Exception),
                'traceback': result.traceback, 'error': ''.join(traceback.format_exception_only(cls, exc)).strip()}


def meta(result):
    """What a Python reader sees of a task's newest row, read once (state, info, children)."""
    m = result._get_task_meta()
    info = m.get('result')
    if isinstance(info, BaseException):
        cls = type(info)
        info = {'exc_class': f'{cls.__module__}.{cls.__qualname__}', 'exc_args': [repr(a) for a in info.args]}
    else:
        info = describe(info)
    children = m.get('children')
    if children is not None:
        children = [{'id': c.id, 'type': type(c).__name__, 'parent': c.parent.id if c.parent else None,
                     'members': [r.id for r in getattr(c, 'results', None) or []]} if hasattr(c, 'id') else {'raw': c}
                    for c in children]
    return {'status': m['status'], 'info': info, 'traceback': m.get('traceback'), 'children': children}


def describe(value):
    if isinstance(value, (dict, list, str, int, float, bool)) or value is None:
        try:
            json.dumps(value)
            return {'json': value}
        except TypeError:
            pass
    return {'type': type(value).__name__, 'repr': repr(value)}


def special(value):
    """Arguments may name Python values the JSON command cannot hold: {"$special": "datetime"}."""
    if isinstance(value, dict) and set(value) == {'$special'}:
        return SPECIAL[value['$special']]
    if isinstance(value, dict):
        return {k: special(v) for k, v in value.items()}
    if isinstance(value, list):
        return [special(v) for v in value]
    return value


def main():
    cmd = json.loads(sys.argv[1])
    op = cmd['op']
    if 'protocol' in cmd:
        app.conf.task_protocol = cmd['protocol']
    if op in ('call', 'send'):
        result = app.send_task(cmd['task'], args=special(cmd.get('args', [])), kwargs=special(cmd.get('kwargs', {})),
                               queue=cmd['queue'], **cmd.get('options', {}))
        if op == 'send':
            print(json.dumps({'id': result.id}))
            return
        print(json.dumps(outcome(result, cmd.get('timeout', 30))))
    elif op == 'calls':
        results = [app.send_task(c['task'], args=c.get('args', []), kwargs=c.get('kwargs', {}), queue=c.get('queue'),
                                 **c.get('options', {})) for c in cmd['calls']]
        print(json.dumps([outcome(r, cmd.get('timeout', 30)) for r in results]))
    elif op == 'get':
        print(json.dumps(outcome(AsyncResult(cmd['id'], app=app), cmd.get('timeout', 30))))
    elif op == 'state':
        r = AsyncResult(cmd['id'], app=app)
        print(json.dumps({'status': r.state}))
    elif op == 'revoke':
        app.control.revoke(cmd['id'])
        print(json.dumps({'revoked': cmd['id']}))
    elif op == 'forget':
        AsyncResult(cmd['id'], app=app).forget()
        print(json.dumps({'forgotten': cmd['id']}))
    elif op == 'meta':
        print(json.dumps(meta(AsyncResult(cmd['id'], app=app))))
    elif op == 'chain':
        from celery import chain
        steps = [app.signature(cmd['task'], args=special(a), queue=cmd['queue']) for a in cmd['args']]
        result = chain(*steps).apply_async()
        ids = []
        node = result
        while node is not None:
            ids.insert(0, node.id)
            node = node.parent
        print(json.dumps({'ids': ids}))
    elif op == 'saferepr':
        print(json.dumps([saferepr(v, 1024) for v in cmd['values']]))
    elif op == 'special_equal':
        # Did the NestJS echo task give back exactly the Python values it was sent?
        result = app.send_task('tasks.echo', kwargs={'value': SPECIAL}, queue=cmd['queue'])
        back = result.get(timeout=cmd.get('timeout', 30))
        print(json.dumps({k: {'equal': back.get(k) == v, 'type': type(back.get(k)).__name__, 'repr': repr(back.get(k))}
                          for k, v in SPECIAL.items()}))
    else:
        raise SystemExit(f'unknown op {op}')


if __name__ == '__main__':
    main()
