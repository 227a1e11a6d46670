"""The Celery app for Celery's own tools: `celery -A genserve.workers.celery_app ...`.

    celery -A genserve.workers.celery_app inspect ping            # every worker answers pong
    celery -A genserve.workers.celery_app inspect active_queues   # the model queues each consumes
    celery -A genserve.workers.celery_app inspect active | stats
    celery -A genserve.workers.celery_app flower --port=5555      # with GENSERVE_WORKER__TASK_EVENTS=true

`celery -A` imports a module and takes its `app`, with no way to pass arguments, so this is
the ONE module in genserve that reads settings at import time (the GENSERVE_* environment,
GENSERVE_BROKER_URL above all); every other process builds its settings in its entry point.
Nothing else imports it. The app is the workers' own (`create_app`): same broker, same
msgpack/JSON `accept_content` (pickle refused), so the workers' msgpack control replies are
accepted, which a bare `celery -b redis://...` refuses ("untrusted content of type msgpack").
Workers are started with `genserve worker`, not `celery -A ... worker`: the genserve command
also renews message leases and watches the repository for new models.
"""

from __future__ import annotations

from genserve.settings import Settings
from genserve.workers.app import create_app

settings = Settings()
if settings.embedded:
    raise RuntimeError("celery -A genserve.workers.celery_app needs GENSERVE_BROKER_URL (redis://host:6379/0)")
app = create_app(settings)
