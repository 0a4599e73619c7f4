"""The benchmark's Python Celery client: send_task() and AsyncResult.get(), as an application would.

    python bench_client.py '{"n": 2000, "round_trips": 300, "warmup": 20, "base": "...", "queue": "bench_celery"}'

Every task gets a distinct input, `text_of(base, i)` (the base text and a word of its own: i in base 36,
six digits, as bench/common.ts taskText), and every result is checked against its own task's expected value.
Prints one JSON line: publish_s (N send_task calls; kombu publishes without confirms by default),
end_to_end_s (first send to the last get()), latencies_ms (sequential send + get), checked (results checked).
"""
import json
import sys
import time

from bench_tasks import app


DIGITS = '0123456789abcdefghijklmnopqrstuvwxyz'


def text_of(base, i):
    word = ''
    while True:
        i, d = divmod(i, 36)
        word = DIGITS[d] + word
        if i == 0:
            break
    return base + ' ' + word.rjust(6, '0')


def expected_of(text):
    return ' '.join(sorted(text.split(' '), key=str.lower))


def main():
    cmd = json.loads(sys.argv[1])
    n, round_trips, warmup, queue = cmd['n'], cmd['round_trips'], cmd.get('warmup', 20), cmd['queue']
    base = cmd['base']
    timeout = max(120.0, n * 0.05)
    issued = [0]
    checked = [0]

    def send():
        text = text_of(base, issued[0])
        issued[0] += 1
        return app.send_task('tasks.sortWords', args=[text, False], queue=queue), expected_of(text)

    def check(value, expected):
        if value != expected:
            raise SystemExit(f'wrong result {value[:200]!r}, expected {expected[:200]!r}')
        checked[0] += 1

    # Warm-up: broker connection, Cassandra session, prepared statements.
    for r, expected in [send() for _ in range(warmup)]:
        check(r.get(timeout=60), expected)

    start_wall = time.time()
    t0 = time.perf_counter()
    results = [send() for _ in range(n)]
    t1 = time.perf_counter()
    for r, expected in results:
        check(r.get(timeout=timeout), expected)
    t2 = time.perf_counter()
    end_wall = time.time()

    latencies = []
    for _ in range(round_trips):
        s = time.perf_counter()
        r, expected = send()
        check(r.get(timeout=30), expected)
        latencies.append((time.perf_counter() - s) * 1000.0)

    import celery
    import kombu
    print(json.dumps({'n': n, 'publish_s': t1 - t0, 'end_to_end_s': t2 - t0, 'latencies_ms': latencies,
                      'warmup': warmup, 'checked': checked[0], 'start_wall': start_wall, 'end_wall': end_wall,
                      'celery': celery.__version__, 'kombu': kombu.__version__}))


if __name__ == '__main__':
    main()
