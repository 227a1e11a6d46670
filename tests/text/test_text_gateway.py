"""GenerateText, CompleteText and ScoreText through the gateway, a real Redis and a real
`genserve worker` process (and once in the embedded mode)."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from genserve.v1 import inference_pb2
from tests.text.conftest import GPT_NAME

pytestmark = pytest.mark.integration

PROMPT = "The assert statement"


def gen_request(**fields) -> inference_pb2.GenerateTextRequest:
    return inference_pb2.GenerateTextRequest(**{"model": GPT_NAME, "prompt": PROMPT, "max_new_tokens": 24, **fields})


def complete(gw, **fields) -> inference_pb2.GenerateTextResponse:
    return gw.inference.CompleteText(gen_request(**fields), timeout=30)


def stream(gw, **fields) -> list[tuple[float, inference_pb2.GenerateTextChunk]]:
    """(seconds since the call, chunk) for each chunk."""
    started = time.perf_counter()
    return [(time.perf_counter() - started, c) for c in gw.inference.GenerateText(gen_request(**fields), timeout=30)]


def status_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_stream_arrives_in_order_before_the_end_and_equals_the_unary_result(text_gateway):
    """Chunks come one by one, the last carries the finish reason; together they are CompleteText's answer."""
    whole = complete(text_gateway, seed=11, max_new_tokens=40, logprobs=True)
    chunks = stream(text_gateway, seed=11, max_new_tokens=40, logprobs=True)
    assert len(chunks) >= 2 and len(chunks[0][1].tokens) < len(whole.tokens)  # the first came ahead of the rest
    assert all(c.finish_reason == inference_pb2.FINISH_REASON_UNSPECIFIED for _, c in chunks[:-1])
    assert chunks[-1][1].finish_reason == whole.finish_reason != inference_pb2.FINISH_REASON_UNSPECIFIED
    assert "".join(c.text for _, c in chunks) == whole.text
    assert [t.id for _, c in chunks for t in c.tokens] == [t.id for t in whole.tokens]
    assert all(c.seed == 11 for _, c in chunks) and whole.model == f"{GPT_NAME}:1"
    assert all(t.logprob < 0 for t in whole.tokens) and "".join(t.text for t in whole.tokens) == whole.text


def test_same_seed_same_text_and_unseeded_requests_return_their_seed(text_gateway):
    """A seed reproduces the text; another seed changes it; the server's pick is returned and reproduces."""
    first = complete(text_gateway, seed=5).text
    assert complete(text_gateway, seed=5).text == first
    assert complete(text_gateway, seed=6).text != first
    picked = complete(text_gateway)
    assert complete(text_gateway, seed=picked.seed).text == picked.text


def test_concurrent_generations_get_their_own_text(text_gateway):
    """Eight streams at once (sharing decode steps in the worker) each give their solo text."""
    def run(seed: int) -> str:
        return "".join(c.text for _, c in stream(text_gateway, seed=seed, max_new_tokens=30))

    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(run, range(8)))
    assert together == [complete(text_gateway, seed=s, max_new_tokens=30).text for s in range(8)]


def test_stop_sequence_stops_before_it(text_gateway):
    """Generation ends before a stop string, which is not returned."""
    greedy = complete(text_gateway, temperature=0.0, max_new_tokens=40)
    stop = greedy.text[12:15]
    stopped = complete(text_gateway, temperature=0.0, max_new_tokens=40, stop=[stop])
    assert stopped.finish_reason == inference_pb2.FINISH_REASON_STOP
    assert stopped.text == greedy.text[: greedy.text.index(stop)]
    streamed = stream(text_gateway, temperature=0.0, max_new_tokens=40, stop=[stop])
    assert "".join(c.text for _, c in streamed) == stopped.text


def test_score_text_reports_nats_per_token_and_bits_per_byte(text_gateway, gpt_dir):
    """ScoreText's numbers are consistent with each other and with PyTorch on the same tokens."""
    from genserve.export.families.gpt.build import score_ids
    from genserve.export.core.publishing import load_published
    from genserve.repository import ModelRepository
    from genserve.tokenization import TextCodec

    text = "Assert statements are a convenient way to insert debugging assertions into a program."
    response = text_gateway.inference.ScoreText(inference_pb2.ScoreTextRequest(model=GPT_NAME, text=text), timeout=30)
    repository = ModelRepository(gpt_dir.parent.parent)
    manifest = repository.resolve(GPT_NAME)
    ids = TextCodec.load(gpt_dir, manifest).encode(text)
    assert response.num_tokens == len(ids) - 1 and response.model == f"{GPT_NAME}:1"
    assert response.log_likelihood == pytest.approx(-score_ids(load_published(repository, manifest).model, ids), rel=1e-5)
    assert response.nats_per_token == pytest.approx(-response.log_likelihood / response.num_tokens)
    assert response.bits_per_byte == pytest.approx(-response.log_likelihood / math.log(2) / len(text.encode()))


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"max_new_tokens": 0}, "got 0"),
        ({"max_new_tokens": 1000}, "(the context of 96 tokens minus the prompt's"),
        ({"temperature": -1.0}, "temperature must be 0 (greedy) .. 100"),
        ({"temperature": math.nan}, "temperature must be 0 (greedy)"),
        ({"top_p": 1.5}, "top_p must be in [0, 1]"),
        ({"top_k": 100000}, "top_k must be 0 (off) .."),
        ({"repetition_penalty": 11.0}, "repetition_penalty must be in [0, 10]"),
        ({"stop": [""]}, "each stop string must be 1..256 characters"),
        ({"prompt": "word " * 400}, "the prompt is"),
    ],
)
def test_bad_generation_requests_are_invalid_and_say_what_is_allowed(text_gateway, fields, needle):
    """Each bad setting is refused before anything is enqueued, naming the allowed range."""
    code, message = status_of(lambda: complete(text_gateway, **fields))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and needle in message
    if "max_new_tokens" in fields:
        assert message.startswith("max_new_tokens must be 1..")
    code, message = status_of(lambda: stream(text_gateway, **fields))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and needle in message


def test_score_and_model_errors(text_gateway):
    """A one-token text cannot be scored; an unknown model is NOT_FOUND."""
    code, message = status_of(lambda: text_gateway.inference.ScoreText(
        inference_pb2.ScoreTextRequest(model=GPT_NAME, text="x"), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "at least 2 tokens" in message
    code, _ = status_of(lambda: complete(text_gateway, model="nosuchgpt"))
    assert code == grpc.StatusCode.NOT_FOUND


def test_text_rpcs_on_an_image_model_name_the_rpc_it_serves(embedded):
    """GenerateText on a VAE is INVALID_ARGUMENT and says it serves GenerateImages."""
    code, message = status_of(lambda: complete(embedded, model="vae"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "serves GenerateImages" in message


def test_embedded_mode_streams_the_same_text(text_embedded, text_gateway):
    """Without a broker the chunks arrive by callback and give the distributed mode's text."""
    chunks = stream(text_embedded, seed=21, max_new_tokens=30)
    tokens = sum(len(c.tokens) for _, c in chunks)
    # Streamed, not answered once: more than one chunk (chunks merge while the reader lags, and
    # a tiny model may draw end-of-text at once).
    assert len(chunks) >= 2 or tokens <= 1
    assert "".join(c.text for _, c in chunks) == complete(text_gateway, seed=21, max_new_tokens=30).text
