"""The bulk consumer: a worker thread that runs batch-job chunks beside the online tasks.

Celery's solo pool runs one task at a time in the consumer thread, so a chunk taken from a
bulk queue made every online request behind it wait for the whole chunk (measured: p50 of
GenerateImages(count=1) 4.7 ms idle, 58 ms with a VAE job running, chunks of 2048). So chunks
do not go through Celery's consumer at all: this thread consumes the `<prefix>.bulk.<model>`
queues with its own kombu connection (prefetch 1, acked after the chunk, so a crash still
leaves the message to be redelivered), while Celery keeps the online queues. A chunk's
message is held like an online task's: its lease is renewed while it runs (workers/leases.py),
so a chunk longer than the visibility timeout is not handed out twice, and this process owns
it for failover (workers/failover.py), so a SIGKILLed worker's chunk comes back in seconds. ONNX Runtime releases the GIL, so an online task runs at once on the other
thread; and between the chunk's ONNX calls the runner pauses while an online task of this
process is running, so the two do not share the cores.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

PAUSE_STEP_S = 0.0005  # how often a paused chunk looks again
MAX_PAUSE_S = 5.0  # a chunk yields at most this long in all: it must finish well within the visibility timeout


class OnlineTasks:
    """How many online tasks this process is running (Celery's prerun/postrun signals)."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    def connect(self, task_name: str) -> None:
        from celery.signals import task_postrun, task_prerun

        def started(sender: Any = None, **_: Any) -> None:
            if getattr(sender, "name", None) == task_name:
                with self._lock:
                    self._count += 1

        def finished(sender: Any = None, **_: Any) -> None:
            if getattr(sender, "name", None) == task_name:
                with self._lock:
                    self._count -= 1

        task_prerun.connect(started, weak=False, dispatch_uid="genserve-online-started")
        task_postrun.connect(finished, weak=False, dispatch_uid="genserve-online-finished")

    @property
    def busy(self) -> bool:
        return self._count > 0


class Yielder:
    """The runner's pause between ONNX calls: wait while an online task runs, bounded per chunk."""

    def __init__(self, online: OnlineTasks) -> None:
        self.online = online
        self.budget = MAX_PAUSE_S

    def __call__(self) -> None:
        while self.online.busy and self.budget > 0:
            time.sleep(PAUSE_STEP_S)
            self.budget -= PAUSE_STEP_S


class BulkConsumer(threading.Thread):
    """Consumes the bulk queues and runs each chunk with `run(payload, pause) -> outcome`."""

    RECONNECT_S = 1.0

    def __init__(self, broker_url: str, transport_options: dict[str, Any], queues: list[str],
                 run: Callable[[dict[str, Any], Callable[[], None]], str],
                 republish: Callable[[str, dict[str, Any]], None], online: OnlineTasks,
                 hold: Callable[[str], bool | None] | None = None, release: Callable[[str], None] | None = None) -> None:
        super().__init__(name="genserve-bulk", daemon=True)
        self.broker_url = broker_url
        self.transport_options = transport_options
        self.queues = queues
        self.run_chunk = run
        self.republish = republish
        self.online = online
        # lease renewal and failover ownership of a message; False: a live worker runs it already
        self.hold = hold or (lambda tag: True)
        self.release = release or (lambda tag: None)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._consume()
            except Exception as exc:  # Redis away (a restart): reconnect; unacked chunks come back
                log.warning("bulk consumer: %s; reconnecting in %.0f s", exc, self.RECONNECT_S)
                time.sleep(self.RECONNECT_S)

    def _consume(self) -> None:
        from kombu import Connection, Queue

        with Connection(self.broker_url, transport_options=self.transport_options) as connection:
            queues = [Queue(name, routing_key=name) for name in self.queues]
            with connection.Consumer(queues, callbacks=[self._on_message], accept=["msgpack", "json"],
                                     prefetch_count=1):
                while not self.stopping.is_set():
                    try:
                        connection.drain_events(timeout=1.0)
                    except TimeoutError:
                        continue

    def _on_message(self, body: Any, message: Any) -> None:
        payload = body[0][0]  # Celery protocol 2: [args, kwargs, embed]; args = [payload]
        queue = (message.delivery_info or {}).get("routing_key") or self.queues[0]
        tag = str(message.delivery_tag)
        if self.hold(tag) is False:  # a second copy of a chunk another live worker runs
            message.ack()
            return
        try:
            outcome = self.run_chunk(payload, Yielder(self.online))
            if outcome == "retry":
                self.republish(queue, payload)
        finally:
            self.release(tag)  # before the ack: if the ack fails, the message comes back
        message.ack()
