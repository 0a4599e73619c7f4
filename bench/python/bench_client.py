"""The benchmark's Python Celery client: send_task() and AsyncResult.get(), as an application would.

    python bench_client.py '{"n": 2000, "round_trips": 300, "warmup": 20, "text": "...", "queue": "bench_celery"}'

Prints one JSON line: publish_s (N send_task calls; kombu publishes without confirms by default),
end_to_end_s (first send to the last get()), latencies_ms (sequential send + get), checked results.
"""
import json
import sys
import time

from bench_tasks import app


def expected_of(text):
    return ' '.join(sorted(text.split(' '), key=str.lower))


def main():
    cmd = json.loads(sys.argv[1])
    n, round_trips, warmup, queue = cmd['n'], cmd['round_trips'], cmd.get('warmup', 20), cmd['queue']
    text = cmd['text']
    expected = expected_of(text)
    timeout = max(120.0, n * 0.05)

    def send():
        return app.send_task('tasks.sortWords', args=[text, False], queue=queue)

    def check(value):
        if value != expected:
            raise SystemExit(f'wrong result {value[:200]!r}')

    # Warm-up: broker connection, Cassandra session, prepared statements.
    for r in [send() for _ in range(warmup)]:
        check(r.get(timeout=60))

    start_wall = time.time()
    t0 = time.perf_counter()
    results = [send() for _ in range(n)]
    t1 = time.perf_counter()
    for r in results:
        check(r.get(timeout=timeout))
    t2 = time.perf_counter()
    end_wall = time.time()

    latencies = []
    for _ in range(round_trips):
        s = time.perf_counter()
        r = send()
        check(r.get(timeout=30))
        latencies.append((time.perf_counter() - s) * 1000.0)

    import celery
    import kombu
    print(json.dumps({'n': n, 'publish_s': t1 - t0, 'end_to_end_s': t2 - t0, 'latencies_ms': latencies,
                      'warmup': warmup, 'start_wall': start_wall, 'end_wall': end_wall,
                      'celery': celery.__version__, 'kombu': kombu.__version__}))


if __name__ == '__main__':
    main()
