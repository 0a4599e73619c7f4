"""A Celery events monitor, as Flower and `celery events` are built: `app.events.Receiver` feeding
`app.events.State`. Prints READY once its queue is bound to celeryev, then watches until the node
given has sent worker-offline after every task id given reached a final state (or the timeout),
and prints what State knows of that node and those tasks as one JSON line.

    python events_monitor.py <node> <timeout seconds> <task id>...
"""
import json
import os
import sys
import threading
import time

from celery import Celery
from celery import states

node, timeout, task_ids = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
app = Celery('monitor', broker=os.environ.get('CELERY_BROKER_URL', 'amqp://guest:guest@127.0.0.1:5672//'))
state = app.events.State()
seen_offline = {'value': False}
raw_types = []


while_running = {}


def on_event(event):
    if event.get('hostname') == node:
        raw_types.append(event['type'])
        if event['type'] == 'worker-offline':
            seen_offline['value'] = True
    state.event(event)
    if event.get('type') == 'task-succeeded' and 'alive' not in while_running and state.workers.get(node):
        # what State says of the node while it runs (after worker-offline it is no longer alive)
        w = state.workers[node]
        while_running.update(alive=w.alive, processed=w.processed, heartbeats=len(w.heartbeats))


def done():
    if not seen_offline['value']:
        return False
    return all(state.tasks.get(t) is not None and state.tasks[t].state in states.READY_STATES for t in task_ids)


with app.connection() as connection:
    recv = app.events.Receiver(connection, handlers={'*': on_event})
    deadline = time.time() + timeout

    def ready(*args, **kwargs):
        print('READY', flush=True)

    def on_iteration():
        recv.should_stop = done() or time.time() > deadline

    recv.on_consume_ready = ready
    recv.on_iteration = on_iteration
    for _ in recv.consume(limit=None, timeout=None, wakeup=False):
        on_iteration()

worker = state.workers.get(node)
out = {
    'celery': __import__('celery').__version__,
    'done': done(),
    'types': raw_types,
    'while_running': while_running,
    'worker': None if worker is None else {
        'hostname': worker.hostname, 'alive': worker.alive, 'sw_ident': worker.sw_ident, 'sw_ver': worker.sw_ver,
        'sw_sys': worker.sw_sys, 'freq': worker.freq, 'processed': worker.processed, 'active': worker.active,
        'loadavg': worker.loadavg, 'pid': worker.pid, 'heartbeats': len(worker.heartbeats),
    },
    'tasks': {
        t: None if state.tasks.get(t) is None else {
            'state': state.tasks[t].state, 'name': state.tasks[t].name, 'args': state.tasks[t].args,
            'result': state.tasks[t].result, 'exception': state.tasks[t].exception, 'runtime': state.tasks[t].runtime,
            'worker': state.tasks[t].worker.hostname if state.tasks[t].worker else None,
            'received': state.tasks[t].received, 'started': state.tasks[t].started,
        } for t in task_ids
    },
}
print(json.dumps(out), flush=True)
