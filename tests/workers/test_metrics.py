"""The worker's metric hooks and the JSON log format, without services."""

from __future__ import annotations

import json
import logging

from prometheus_client import REGISTRY

from genserve.logs import JsonFormatter, RequestIdFilter, request_id
from genserve.workers import metrics


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_decode_hooks_count_steps_tokens_and_first_tokens():
    """A prefill's first token and each decode step's rows add up to the tokens generated."""
    before = sample("genserve_worker_generated_tokens_total", model="tiny-gpt")
    metrics.first_token("tiny-gpt", 0.02)
    metrics.first_token("tiny-gpt", 0.03)
    metrics.decode_step("tiny-gpt", 2)
    metrics.decode_step("tiny-gpt", 1)
    assert sample("genserve_worker_generated_tokens_total", model="tiny-gpt") - before == 5
    assert sample("genserve_worker_decode_steps_total", model="tiny-gpt") >= 2
    assert sample("genserve_worker_time_to_first_token_seconds_count", model="tiny-gpt") >= 2


def test_message_hooks_put_request_ids_on_log_records_and_count_outcomes():
    """Between message_started and message_finished the message's ids are the log context."""
    payload = {"model": "m:1", "op": "denoise", "requests": [{"request_id": "a"}, {"request_id": "b"}]}
    started = metrics.message_started(payload)
    assert request_id.get() == "a,b"
    metrics.message_finished(started, payload, {"results": [{"ok": True}, {"ok": False, "code": "INVALID_ARGUMENT"}],
                                                "calls": [1]})
    assert request_id.get() == ""
    assert sample("genserve_worker_requests_total", model="m", op="denoise", code="INVALID_ARGUMENT") == 1
    assert sample("genserve_worker_requests_per_message_sum", model="m", op="denoise") == 2


def test_json_lines_carry_the_request_id_and_extra_fields():
    """One JSON object per line: level, logger, message, request id and the `extra=` fields."""
    record = logging.LogRecord("genserve.x", logging.WARNING, __file__, 1, "ran %d", (3,), None)
    record.model = "vae:1"
    token = request_id.set("rid-1")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "ran 3" and line["request_id"] == "rid-1" and line["model"] == "vae:1"
    assert line["level"] == "WARNING" and line["logger"] == "genserve.x"
