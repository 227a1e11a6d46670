"""The sync and asyncio clients against a real gateway: same results, one error type."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import grpc
import numpy as np
import pytest

from genserve.aio_client import AsyncClient
from genserve.client import Client, GenserveRpcError

pytestmark = pytest.mark.integration


def test_async_client_generates_what_the_sync_client_does(embedded):
    """A seeded GenerateImages gives the same numpy array through both clients; list_models too."""
    with Client(embedded.address) as client:
        expected = client.generate_images("vae", 3, seed=5)
        names = [(m.name, m.version) for m in client.list_models()]

    async def run() -> tuple:
        async with AsyncClient(embedded.address) as client:
            await client.wait_ready()
            results = await asyncio.gather(*(client.generate_images("vae", 3, seed=5) for _ in range(4)))
            return results, [(m.name, m.version) for m in await client.list_models()]

    results, listed = asyncio.run(run())
    assert expected.images.shape == (3, 1, 28, 28) and expected.images.dtype == np.float32
    for result in results:
        assert np.array_equal(result.images, expected.images) and result.seed == 5 and result.model == "vae:1"
    assert listed == names and ("vae", "1") in names


def test_both_clients_raise_one_error_type_with_status_and_message(embedded):
    """A bad count and an unknown model raise GenserveRpcError (a grpc.RpcError) with code and message."""
    with Client(embedded.address) as client, pytest.raises(GenserveRpcError) as sync_error:
        client.generate_images("vae", 0)
    assert sync_error.value.status == grpc.StatusCode.INVALID_ARGUMENT and "count" in sync_error.value.message
    assert isinstance(sync_error.value, grpc.RpcError) and sync_error.value.code() == sync_error.value.status

    async def unknown() -> GenserveRpcError:
        async with AsyncClient(embedded.address) as client:
            try:
                await client.generate_images("nosuchmodel", 1)
            except GenserveRpcError as exc:
                return exc
        raise AssertionError("no error")

    error = asyncio.run(unknown())
    assert error.status == grpc.StatusCode.NOT_FOUND and "vae" in error.message


def test_generate_command_prints_the_status_instead_of_a_traceback(embedded, tmp_path):
    """`genserve generate` with a bad count exits 1 with the gateway's status and message."""
    done = subprocess.run([sys.executable, "-m", "genserve", "generate", "vae", "-n", "0", "-o", str(tmp_path / "x.png"),
                           "--address", embedded.address], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "INVALID_ARGUMENT" in done.stderr and "Traceback" not in done.stderr


def test_health_command_reports_serving(embedded):
    """`genserve health` exits 0 and prints SERVING against a running gateway, 1 when none answers."""
    ok = subprocess.run([sys.executable, "-m", "genserve", "health", "--address", embedded.address],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and ok.stdout.strip() == "SERVING"
    down = subprocess.run([sys.executable, "-m", "genserve", "health", "--address", "127.0.0.1:1", "--timeout", "1"],
                          capture_output=True, text=True, timeout=30)
    assert down.returncode == 1 and "unhealthy" in down.stderr
