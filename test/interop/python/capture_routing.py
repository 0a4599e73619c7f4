"""Captures what Celery declares and where it publishes, for given settings, without a broker.

Writes test/fixtures/celery-routing-5.7.json (run from this directory with the interop venv's python):
  python capture_routing.py > ../../fixtures/celery-routing-5.7.json
Each case: the settings, the declaration frames of every known queue (as a worker's consumer
sends them), the native delayed-delivery frames when Celery would declare them, and for each
send_task call the exchange / routing key / declared queues of the publish.
"""
import datetime
import json
import sys

import kombu.messaging
from celery import Celery
from celery.utils.quorum_queues import detect_quorum_queues
from kombu.transport.base import to_rabbitmq_queue_arguments
from kombu.transport.native_delayed_delivery import (bind_queue_to_native_delayed_delivery_exchange,
                                                     declare_native_delayed_delivery_exchanges_and_queues)


class Recorder:
    """A channel that records the frames it is asked to send."""

    def __init__(self):
        self.frames = []

    def prepare_queue_arguments(self, arguments, **kwargs):
        return to_rabbitmq_queue_arguments(arguments, **kwargs)

    def exchange_declare(self, exchange, type, durable, auto_delete, arguments=None, nowait=False, passive=False):
        self.frames.append(['exchange.declare', exchange, type, {'durable': durable, 'auto_delete': auto_delete},
                            list((arguments or {}).items())])

    def queue_declare(self, queue, passive, durable, exclusive, auto_delete, arguments, nowait):
        self.frames.append(['queue.declare', queue, {'durable': durable, 'exclusive': exclusive, 'auto_delete': auto_delete},
                            list((arguments or {}).items())])

    def queue_bind(self, queue, exchange, routing_key, arguments=None, nowait=False):
        self.frames.append(['queue.bind', queue, exchange, routing_key])

    def exchange_bind(self, destination, source, routing_key, nowait=False, arguments=None):
        self.frames.append(['exchange.bind', destination, source, routing_key])


class FakeConnection:
    def __init__(self, recorder):
        self.recorder = recorder

    def channel(self):
        return self.recorder


def capture(case):
    app = Celery('capture', broker='amqp://guest:guest@127.0.0.1:1//')
    app.conf.update(case['settings'])
    published = []

    def publish(self, body, routing_key=None, delivery_mode=None, mandatory=False, immediate=False, priority=0,
                content_type=None, content_encoding=None, serializer=None, headers=None, compression=None,
                exchange=None, retry=False, retry_policy=None, declare=None, expiration=None, timeout=None,
                confirm_timeout=None, **properties):
        ex = exchange.name if hasattr(exchange, 'name') else exchange
        published.append({'exchange': ex, 'routing_key': routing_key, 'priority': priority,
                          'declare': [q.name for q in (declare or [])],
                          'eta': bool((headers or {}).get('eta')),
                          'x_headers': sorted(k for k in (headers or {}) if k.startswith('x-'))})

    kombu.messaging.Producer.publish = publish
    sends = []
    for send in case.get('sends', []):
        options = dict(send.get('options', {}))
        if 'eta_in' in options:
            options['eta'] = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=options.pop('eta_in'))
        published.clear()
        try:
            app.send_task(send['task'], queue=send.get('queue'), **options)
            sends.append({**send, 'publish': published[0]})
        except Exception as exc:  # noqa: BLE001 - recorded as the outcome
            sends.append({**send, 'error': f'{type(exc).__name__}: {exc}'})
    retries = []
    if case.get('retries'):
        from celery.app.task import Context

        def retrying(self):
            return None

        for r in case['retries']:
            published.clear()
            name = r.get('task', 't.retrying')
            task = app.tasks[name] if name in app.tasks else app.task(name=name, bind=True, shared=False)(retrying)
            request = Context(id='r-1', task=name, args=[], kwargs={}, retries=0, headers=dict(X_DEATH),
                              delivery_info={'exchange': r['exchange'], 'routing_key': r['routing_key'],
                                             'priority': r.get('priority'), 'redelivered': False})
            try:
                task.signature_from_request(request, countdown=r.get('countdown'), retries=1).apply_async()
                retries.append({**r, 'publish': published[0]})
            except Exception as exc:  # noqa: BLE001
                retries.append({**r, 'error': f'{type(exc).__name__}: {exc}'})
    rec = Recorder()
    for name in case.get('declare', list(app.amqp.queues.keys())):
        app.amqp.queues[name].declare(channel=rec)
    declared = rec.frames
    quorum = detect_quorum_queues(app, 'amqp')[0]
    delayed = []
    bindings = []
    if quorum:
        rec = Recorder()
        declare_native_delayed_delivery_exchanges_and_queues(FakeConnection(rec), app.conf.broker_native_delayed_delivery_queue_type)
        delayed = rec.frames
        rec = Recorder()
        for queue in app.amqp.queues.values():
            bind_queue_to_native_delayed_delivery_exchange(FakeConnection(rec), queue)
        bindings = rec.frames
    return {'name': case['name'], 'settings': case['settings'], 'quorum': quorum, 'declared': declared,
            'delayed': delayed, 'delayedBindings': bindings, 'sends': sends, 'retries': retries}


X_DEATH = {'x-death': [{'queue': 'celery_delayed_0', 'reason': 'expired', 'count': 1}],
           'x-first-death-exchange': 'celery_delayed_0', 'x-first-death-queue': 'celery_delayed_0',
           'x-first-death-reason': 'expired', 'x-last-death-exchange': 'celery_delayed_0',
           'x-last-death-queue': 'celery_delayed_0', 'x-last-death-reason': 'expired', 'x-custom': 'kept'}
PREFIX_100 = '0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.1.0.0.1.0.0.'
RETRIES = [
    {'exchange': '', 'routing_key': 'celery', 'countdown': 10},
    {'exchange': 'celery', 'routing_key': 'celery', 'countdown': 10},
    {'exchange': 'celery_delayed_delivery', 'routing_key': PREFIX_100 + 'celery', 'countdown': 10},
    {'exchange': 'celery_delayed_delivery', 'routing_key': PREFIX_100 + 'celery', 'countdown': None},
    {'exchange': 'celery', 'routing_key': 'celery', 'countdown': None, 'priority': 3},
    {'exchange': 'c_x', 'routing_key': 'c.key', 'countdown': 10},
    {'exchange': 'celery_delayed_delivery', 'routing_key': PREFIX_100 + 'c.key', 'countdown': 4},
]
ROUTES_QUEUES = {
    'prio': {'exchange': 'prio_x', 'exchange_type': 'topic', 'routing_key': 'prio.#',
             'queue_arguments': {'x-max-priority': 10}},
    'plain': {},
    'fan': {'exchange': 'fan_x', 'exchange_type': 'fanout'},
    'bk': {'exchange': 'bk_x', 'exchange_type': 'topic', 'binding_key': 'bk.*'},
}
ROUTES = {'a.*': 'prio', 'b.x': {'queue': 'plain', 'routing_key': 'custom'},
          'c.*': {'exchange': 'c_x', 'exchange_type': 'topic', 'routing_key': 'c.key'}, 'f.*': 'fan',
          'k.*': {'queue': 'bk', 'routing_key': 'bk.one'}}
COMMON_SENDS = [
    {'task': 't.plain'},
    {'task': 't.plain', 'queue': 'other'},
    {'task': 't.plain', 'options': {'priority': 7}},
    {'task': 't.plain', 'options': {'countdown': 100}},
    {'task': 't.plain', 'options': {'countdown': 0.5}},
    {'task': 't.plain', 'options': {'eta_in': -10}},
    {'task': 't.plain', 'options': {'exchange': 'ex_only', 'routing_key': 'rk_only'}},
    {'task': 't.plain', 'options': {'routing_key': 'rk_only'}},
]
ROUTED_SENDS = COMMON_SENDS + [
    {'task': 'a.one'}, {'task': 'a.one', 'queue': 'plain'}, {'task': 'b.x'}, {'task': 'c.one'}, {'task': 'f.one'},
    {'task': 'k.one'}, {'task': 'a.one', 'options': {'countdown': 100}}, {'task': 'c.one', 'options': {'countdown': 5}},
    {'task': 'f.one', 'options': {'countdown': 3}}, {'task': 'k.one', 'options': {'countdown': 2}},
    {'task': 'b.x', 'options': {'countdown': 2}},
    {'task': 'a.one', 'options': {'routing_key': '0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.1.prio.x'}},
]
CASES = [
    {'name': 'default', 'settings': {}, 'sends': COMMON_SENDS, 'declare': ['celery', 'other'], 'retries': RETRIES},
    {'name': 'max-priority', 'settings': {'task_queue_max_priority': 10}, 'sends': COMMON_SENDS, 'declare': ['celery', 'other']},
    {'name': 'quorum', 'settings': {'task_default_queue_type': 'quorum'}, 'sends': COMMON_SENDS, 'declare': ['celery', 'other']},
    {'name': 'quorum-priority', 'settings': {'task_default_queue_type': 'quorum', 'task_queue_max_priority': 5},
     'sends': COMMON_SENDS[:1], 'declare': ['celery']},
    {'name': 'quorum-topic', 'settings': {'task_default_queue_type': 'quorum', 'task_default_exchange_type': 'topic'},
     'sends': COMMON_SENDS, 'declare': ['celery', 'other'], 'retries': RETRIES},
    {'name': 'topic-classic', 'settings': {'task_default_exchange_type': 'topic'}, 'sends': COMMON_SENDS, 'declare': ['celery', 'other']},
    {'name': 'routes', 'settings': {'task_queues': ROUTES_QUEUES, 'task_routes': ROUTES, 'task_queue_max_priority': 5,
                                    'task_default_queue': 'plain'},
     'sends': ROUTED_SENDS, 'declare': ['prio', 'plain', 'fan', 'bk', 'other']},
    {'name': 'routes-quorum', 'settings': {
        'task_queues': {**ROUTES_QUEUES, 'qq': {'exchange': 'qq', 'exchange_type': 'topic', 'routing_key': 'qq',
                                                'queue_arguments': {'x-queue-type': 'quorum'}}},
        'task_routes': ROUTES, 'task_default_queue': 'plain'},
     'sends': ROUTED_SENDS + [{'task': 't.plain', 'queue': 'qq', 'options': {'countdown': 100}}],
     'declare': ['prio', 'plain', 'fan', 'bk', 'qq', 'other'], 'retries': RETRIES + [
         {'task': 'c.retrying', 'exchange': 'celery_delayed_delivery', 'routing_key': PREFIX_100 + 'c.key', 'countdown': 4},
         {'task': 'a.retrying', 'exchange': 'celery_delayed_delivery', 'routing_key': PREFIX_100 + 'prio.#', 'countdown': 4},
         {'task': 'c.retrying', 'exchange': 'celery_delayed_delivery', 'routing_key': PREFIX_100 + 'c.key', 'countdown': None}]},
    {'name': 'quorum-topic-classic-delay', 'settings': {'task_default_queue_type': 'quorum', 'task_default_exchange_type': 'topic',
                                                        'broker_native_delayed_delivery_queue_type': 'classic'},
     'sends': [], 'declare': ['celery']},
]

if __name__ == '__main__':
    # One line per case: the fixture stays diffable without being 150 kB of indentation.
    cases = ',\n  '.join(json.dumps(capture(c)) for c in CASES)
    sys.stdout.write(f'{{"celery": "{__import__("celery").__version__}", "kombu": "{kombu.__version__}",\n "cases": [\n  {cases}\n ]}}\n')
