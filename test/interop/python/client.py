"""A Python Celery client for the interop suite. One JSON command in argv[1], one JSON answer on stdout.

ops:
  call      send_task(task, args, kwargs, queue, **options), then get(); answers the outcome
  calls     several 'call's in one process: sends them all, then answers the outcomes in order
  send      send_task only; answers the id
  watch     like call, and polls the result meanwhile: answers the outcome and every state seen
            (with its info: the exception of a RETRY, the pid/hostname of a STARTED)
  send      send_task only; answers the id (with queues: [...] or routes: [[exchange, routing_key], ...] instead
            of queue, the same call to each, ids in order)
  get       AsyncResult(id).get(); answers the outcome
  raw_get   basic.get with py-amqp from queue until a message with headers.retries == retries: answers the
            Python type of every header and property as py-amqp decoded them from the frame, and the body
  revoke    app.control.revoke(id)
  saferepr  celery.utils.saferepr.saferepr(value, 1024) for each value
  forget    AsyncResult(id).forget() (Celery 5.7's Cassandra backend deletes the task's rows)
  meta      AsyncResult(id): state, info (value, exception or STARTED meta), traceback, children
  chain     chain(task.s(*args), task.s(*args2)) on a queue; answers the step ids
  workflow  a chain, group or chord of steps on any queues (link_error frozen, per step or for the whole chain);
            answers the ids and the caller's get()
"""
import json
import sys
import time
import traceback

from celery.result import AsyncResult
from celery.utils.saferepr import saferepr

from tasks import SPECIAL, app


def status_of(result):
    """A result's state; a GroupResult has none of its own: SUCCESS when every member succeeded."""
    if hasattr(result, 'status'):
        return result.status
    return 'SUCCESS' if result.successful() else 'FAILURE'


def outcome(result, timeout):
    try:
        value = result.get(timeout=timeout, propagate=True)
        return {'id': result.id, 'status': status_of(result), 'result': describe(value)}
    except Exception as exc:  # noqa: BLE001 - the test wants whatever Celery raised
        cls = type(exc)
        return {'id': result.id, 'status': status_of(result), 'exc_class': f'{cls.__module__}.{cls.__qualname__}',
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


def describe_info(value):
    if isinstance(value, BaseException):
        cls = type(value)
        return {'exc_class': f'{cls.__module__}.{cls.__qualname__}', 'exc_args': [repr(a) for a in value.args]}
    return describe(value)


def watch(result, timeout, interval):
    """Every state the result goes through while Python polls it (one backend read per poll)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = result.backend.get_task_meta(result.id)
        state = meta['status']
        if not seen or seen[-1]['state'] != state:
            seen.append({'state': state, 'info': describe_info(meta.get('result'))})
        if state in ('SUCCESS', 'FAILURE', 'REVOKED'):
            break
        time.sleep(interval)
    return seen


def typed(value):
    """The Python types py-amqp decoded a field table into (int / float / str / bool / NoneType ...)."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [typed(v) for v in value]
    return type(value).__name__


def raw_get(queue, retries, limit=10):
    import amqp
    from urllib.parse import urlparse
    url = urlparse(app.conf.broker_url)
    conn = amqp.Connection(f'{url.hostname}:{url.port or 5672}', userid=url.username or 'guest',
                           password=url.password or 'guest')
    conn.connect()
    try:
        channel = conn.channel()
        for _ in range(limit):
            message = channel.basic_get(queue, no_ack=True)
            if message is None:
                break
            headers = message.properties.get('application_headers') or {}
            if headers.get('retries') == retries:
                properties = {k: v for k, v in message.properties.items() if k != 'application_headers'}
                return {'header_types': typed(headers), 'property_types': typed(properties),
                        'body': message.body.decode('utf-8') if isinstance(message.body, bytes) else message.body}
        return None
    finally:
        conn.close()


def chain_ids(result):
    """The ids of a chain's steps, first to last, from the last step's result and its parents."""
    ids = []
    node = result
    while node is not None:
        ids.insert(0, node.id)
        node = node.parent
    return ids


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
    if op == 'send' and ('queues' in cmd or 'routes' in cmd):
        targets = [{'queue': q} for q in cmd.get('queues', [])] + \
            [{'exchange': x, 'routing_key': k} for x, k in cmd.get('routes', [])]
        ids = [app.send_task(cmd['task'], args=cmd.get('args', []), kwargs=cmd.get('kwargs', {}), **target,
                             **cmd.get('options', {})).id for target in targets]
        print(json.dumps({'ids': ids}))
        return
    if op in ('call', 'send', 'watch'):
        result = app.send_task(cmd['task'], args=special(cmd.get('args', [])), kwargs=special(cmd.get('kwargs', {})),
                               queue=cmd['queue'], **cmd.get('options', {}))
        if op == 'send':
            print(json.dumps({'id': result.id}))
            return
        seen = watch(result, cmd.get('timeout', 30), cmd.get('interval', 0.02)) if op == 'watch' else None
        answer = outcome(result, cmd.get('timeout', 30))
        if seen is not None:
            answer['seen'] = seen
        print(json.dumps(answer))
    elif op == 'calls':
        results = [app.send_task(c['task'], args=c.get('args', []), kwargs=c.get('kwargs', {}), queue=c.get('queue'),
                                 **c.get('options', {})) for c in cmd['calls']]
        print(json.dumps([outcome(r, cmd.get('timeout', 30)) for r in results]))
    elif op == 'get':
        print(json.dumps(outcome(AsyncResult(cmd['id'], app=app), cmd.get('timeout', 30))))
    elif op == 'state':
        r = AsyncResult(cmd['id'], app=app)
        print(json.dumps({'status': r.state}))
    elif op == 'raw_get':
        print(json.dumps(raw_get(cmd['queue'], cmd.get('retries', 1))))
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
        print(json.dumps({'ids': chain_ids(chain(*steps).apply_async())}))
    elif op == 'workflow':
        # chain / group / chord of {task, args, queue, [link_error: {task, queue}]} or {group: [steps]} steps; answers every frozen id
        # and the caller's own get() of the workflow's result (the last step, the body)
        from celery import chain, chord

        def step(s):
            if 'group' in s:
                from celery import group
                return group([step(x) for x in s['group']])
            sig = app.signature(s['task'], args=special(s.get('args', [])), queue=s['queue'])
            if 'link_error' in s:
                eb = app.signature(s['link_error']['task'], queue=s['link_error']['queue'])
                eb.freeze()
                sig.on_error(eb)
            return sig
        if cmd['kind'] == 'chain':
            sigs = [step(s) for s in cmd['steps']]
            workflow = chain(*sigs)
            whole = None
            if 'link_error' in cmd:
                # the chain's own link_error (Celery gives it to every step)
                whole = app.signature(cmd['link_error']['task'], queue=cmd['link_error']['queue'])
                whole.freeze()
                workflow.link_error(whole)
            result = workflow.apply_async()
            ids = chain_ids(result)
            errbacks = [s.options['link_error'][0]['options']['task_id'] for s in sigs if s.options.get('link_error')]
            if whole is not None:
                errbacks = [whole.id]
        elif cmd['kind'] == 'group':
            # a GroupResult collected by get() without save() (the Cassandra backend has none)
            from celery import group
            result = group([step(s) for s in cmd['members']]).apply_async()
            ids = [r.id for r in result.results]
            errbacks = []
        else:
            header = [step(s) for s in cmd['header']]
            result = chord(header)(step(cmd['body']))
            ids = [r.id for r in result.parent.results] + [result.id]
            errbacks = []
        answer = outcome(result, cmd.get('timeout', 30))
        answer.update(ids=ids, errbacks=errbacks)
        print(json.dumps(answer))
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
