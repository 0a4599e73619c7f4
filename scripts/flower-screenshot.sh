#!/usr/bin/env bash
# Takes docs/flower-*.png, the README's screenshots of Flower showing a NestJS worker: the sample worker
# on the local RabbitMQ / Cassandra (npm run services:up), Flower 2 from PyPI (installed into
# .interop-venv as the interop suite does), a few sample tasks, then headless Chromium (Debian's
# `chromium`: apt-get install -y chromium). Run by hand, not by CI:  bash scripts/flower-screenshot.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672 CASSANDRA_CONTACT_POINTS=127.0.0.1 CASSANDRA_USERNAME=cassandra CASSANDRA_PASSWORD=cassandra
PORT=${FLOWER_PORT:-5566}
command -v chromium >/dev/null || { echo "needs chromium (apt-get install -y chromium)"; exit 2; }
npm run --silent build:sample
.interop-venv/bin/python -c 'import flower' 2>/dev/null || .interop-venv/bin/python -m pip install --quiet 'flower>=2.2,<3'
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
node dist-sample/sample/main.js worker > /tmp/flower-shot-worker.log 2>&1 & pids+=($!)
(cd test/interop/python && FLOWER_UNAUTHENTICATED_API=true PY_QUEUE=celery ../../../.interop-venv/bin/celery -A tasks --broker "$CELERY_BROKER_URL" flower --address=127.0.0.1 --port="$PORT" > /tmp/flower-shot-flower.log 2>&1) & pids+=($!)
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$PORT/healthcheck" >/dev/null && break; sleep 0.5; done
sleep 3
for _ in 1 2 3; do node dist-sample/sample/main.js client > /dev/null; done
curl -sf "http://127.0.0.1:$PORT/api/workers?refresh=1" > /dev/null
sleep 2
shot() {
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --hide-scrollbars \
    --window-size=1400,700 --virtual-time-budget=8000 --screenshot="$2" "http://127.0.0.1:$PORT$1" 2>/dev/null
}
shot /workers docs/flower-workers.png
shot /tasks docs/flower-tasks.png
echo "wrote docs/flower-workers.png docs/flower-tasks.png"
