"""Python Celery tasks of the interop suite: the walkthrough's sortWords and helpers that report
what the worker received."""
import datetime
import decimal
import time
import uuid

from celery import Celery

app = Celery('tasks')
app.config_from_object('celeryconfig')


@app.task(name='tasks.sortWords')
def sortWords(text, capitalize):
    sortedWords = sorted(text.split(' '), key=str.lower)
    if capitalize:
        return ' '.join([w.upper() for w in sortedWords])
    return ' '.join(sortedWords)


@app.task(name='tasks.add')
def add(x, y):
    return x + y


@app.task(name='tasks.tsum')
def tsum(numbers):
    """The sum of a list of numbers: a chord body."""
    return sum(numbers)


@app.task(name='tasks.failWords')
def failWords(text):
    raise ValueError(f'cannot sort: {text!r}')


@app.task(name='tasks.echo')
def echo(value=None):
    return value


@app.task(name='tasks.now')
def now():
    return time.time()


@app.task(name='tasks.sleep')
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task(name='tasks.describe')
def describe(*args, **kwargs):
    """What Python sees: the type and repr of every argument."""
    def d(v):
        return {'type': type(v).__name__, 'repr': repr(v)}
    return {'args': [d(a) for a in args], 'kwargs': {k: d(v) for k, v in kwargs.items()}}


@app.task(name='tasks.request', bind=True)
def request(self):
    """The headers as the Python worker read them."""
    r = self.request
    return {'retries': r.retries, 'timelimit': list(r.timelimit or []), 'root_id': r.root_id,
            'parent_id': r.parent_id, 'group': r.group, 'origin': r.origin, 'eta': r.eta, 'expires': r.expires,
            'ignore_result': r.ignore_result}


@app.task(name='tasks.retryOnce', bind=True, max_retries=1)
def retryOnce(self):
    raise self.retry(countdown=60, exc=RuntimeError('DB busy'))



@app.task(name='tasks.pyFlaky', bind=True, max_retries=3)
def pyFlaky(self, failures):
    """Celery's twin of the sample's tasks.flaky: retries itself (0.1 s countdown) while its
    retries are fewer than `failures`, then says how many it took."""
    if self.request.retries < failures:
        raise self.retry(countdown=0.1, exc=Exception('flaky'))
    return f'ok after {self.request.retries} retries'


@app.task(name='tasks.pyAutoretry', bind=True, autoretry_for=(KeyError,), retry_kwargs={'countdown': 0.1, 'max_retries': 2})
def pyAutoretry(self, failures):
    """autoretry_for: a KeyError retries by itself (0.1 s, at most 2 retries)."""
    if self.request.retries < failures:
        raise KeyError('missing')
    return f'ok after {self.request.retries} retries'


@app.task(name='tasks.pyLimited', rate_limit='5/s')
def pyLimited():
    """Celery's twin of the sample's tasks.limited: the time in ms, at most 5 a second per worker."""
    return round(time.time() * 1000)


@app.task(name='tasks.retryCapture', bind=True)
def retryCapture(self, *args, **kwargs):
    """Retries in an hour: the suite reads the retry message it publishes."""
    raise self.retry(countdown=3600, exc=RuntimeError('DB busy'))

SPECIAL = {
    'datetime': datetime.datetime(2025, 1, 15, 12, 0, 0, 123000, tzinfo=datetime.timezone.utc),
    'date': datetime.date(2025, 1, 15),
    'time': datetime.time(12, 0, 0),
    'uuid': uuid.UUID('12345678-1234-5678-1234-567812345678'),
    'decimal': decimal.Decimal('1.10'),
    'bytes': b'abc',
    'base64': b'\xff\x00',
}


@app.task(name='tasks.pyErrback')
def pyErrback(task_id):
    """A link_error in the by-id form: returns the id of the task that failed."""
    return task_id
