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

# tests/test_compose.py validates docker-compose.yml with docker-compose (or `docker compose`):
# install Debian's docker-compose when neither is there and apt can (root); the test fails
# without one rather than skip. PyPI's docker-compose 1.x does not install on Python 3.11+.
if ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing docker-compose (apt-get) for tests/test_compose.py"
    apt-get install -y -q docker-compose >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q docker-compose >/dev/null; }
  else
    echo "warning: no docker-compose and no apt-get as root: tests/test_compose.py will fail (install docker-compose)" >&2
  fi
fi

# pytest exits 5 when it collects nothing; that fails here like any other non-zero exit.
exec "$BIN/python" -m pytest "$@"
