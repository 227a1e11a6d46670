"""genserve.client's text methods and the `genserve text` command against a real gateway + worker."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from genserve.client import Client
from tests.text.conftest import GPT_NAME

pytestmark = pytest.mark.integration


def test_client_streams_completes_and_scores(text_gateway):
    with Client(text_gateway.address) as client:
        chunks = list(client.stream_text(GPT_NAME, "The", max_new_tokens=12, seed=11, temperature=0.9))
        whole = client.complete_text(GPT_NAME, "The", max_new_tokens=12, seed=11, temperature=0.9)
        score = client.score_text(GPT_NAME, "The class statement defines a class.")
    assert "".join(c.text for c in chunks) == whole.text
    assert [t for c in chunks for t in c.tokens] == whole.tokens
    assert len(whole.tokens) == 12 and whole.finish_reason == "length" and whole.seed == 11
    assert chunks[-1].finish_reason == "length" and all(c.finish_reason == "unspecified" for c in chunks[:-1])
    assert score.num_tokens > 3 and score.log_likelihood < 0
    assert score.nats_per_token == pytest.approx(-score.log_likelihood / score.num_tokens)


def test_client_passes_sampling_errors_through(text_gateway):
    with Client(text_gateway.address) as client, pytest.raises(grpc.RpcError) as error:
        client.complete_text(GPT_NAME, "The", max_new_tokens=4, top_p=1.5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "top_p" in error.value.details()


def test_text_command_streams_to_stdout(text_gateway):
    with Client(text_gateway.address) as client:
        expected = client.complete_text(GPT_NAME, "The", max_new_tokens=10, seed=4).text
    done = subprocess.run([sys.executable, "-m", "genserve", "text", GPT_NAME, "The", "--max-new-tokens", "10",
                           "--seed", "4", "--address", text_gateway.address],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "The" + expected
    assert "finished: length, seed 4" in done.stderr


def test_async_client_streams_what_complete_returns(text_gateway):
    """AsyncClient.stream_text is an async iterator whose chunks join to the sync completion."""
    import asyncio

    from genserve.aio_client import AsyncClient

    with Client(text_gateway.address) as client:
        whole = client.complete_text(GPT_NAME, "The", max_new_tokens=10, seed=8)

    async def stream() -> list:
        async with AsyncClient(text_gateway.address) as client:
            return [chunk async for chunk in client.stream_text(GPT_NAME, "The", max_new_tokens=10, seed=8)]

    chunks = asyncio.run(stream())
    assert "".join(c.text for c in chunks) == whole.text and chunks[-1].finish_reason == "length"


def test_streams_of_both_clients_raise_genserve_rpc_error(text_gateway):
    """An invalid stream request fails with GenserveRpcError while iterating, sync and async alike."""
    import asyncio

    from genserve.aio_client import AsyncClient
    from genserve.client import GenserveRpcError

    with Client(text_gateway.address) as client, pytest.raises(GenserveRpcError) as error:
        list(client.stream_text(GPT_NAME, "The", max_new_tokens=4, top_p=1.5))
    assert error.value.status == grpc.StatusCode.INVALID_ARGUMENT and "top_p" in error.value.message

    async def stream() -> None:
        async with AsyncClient(text_gateway.address) as client:
            async for _ in client.stream_text(GPT_NAME, "The", max_new_tokens=4, top_p=1.5):
                pass

    with pytest.raises(GenserveRpcError) as aio_error:
        asyncio.run(stream())
    assert aio_error.value.status == grpc.StatusCode.INVALID_ARGUMENT
