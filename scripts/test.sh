#!/usr/bin/env bash
# Run the test suite against a real Redis; start redis-server when nothing answers.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
REDIS_PORT=${GENSERVE_TEST_REDIS_PORT:-6379}

redis_up() { "$BIN/python" -c "import redis,sys; redis.Redis(port=$REDIS_PORT, socket_timeout=1).ping()" 2>/dev/null; }

if ! redis_up; then
  command -v redis-server >/dev/null || { echo "no Redis on $REDIS_PORT and no redis-server to start (apt-get install redis-server)" >&2; exit 1; }
  echo "starting redis-server on 127.0.0.1:$REDIS_PORT"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --logfile /tmp/genserve-test-redis.log
  for _ in $(seq 50); do redis_up && break; sleep 0.1; done
  redis_up || { echo "redis-server did not come up" >&2; exit 1; }
fi

# pytest exits 5 when it collects nothing; that fails here like any other non-zero exit.
exec "$BIN/python" -m pytest "$@"
