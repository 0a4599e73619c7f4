"""An instrumented Python client (traced.py): sends tasks.add(x, y) with apply_async to QUEUE,
waits for its result and prints {"id": ..., "result": ...}; its publish span goes to OTEL_SPANS_FILE.

    python traced_client.py QUEUE X Y
"""
import json
import sys

import traced  # noqa: F401  (instruments Celery before the task is sent)
from tasks import add

queue, x, y = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
result = add.apply_async((x, y), queue=queue)
print(json.dumps({'id': result.id, 'result': result.get(timeout=60)}))
