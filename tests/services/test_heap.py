"""The gateway freezes its start-up objects out of the garbage collector's full passes
(genserve/heap.py): a full pass afterwards walks only what came later."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import asyncio, gc, time
from genserve.services.server import serve
from genserve.settings import GatewaySettings, Settings

async def main():
    ready = asyncio.Event()
    task = asyncio.create_task(serve(Settings(model_repository={repo!r}, gateway=GatewaySettings(port=0)), ready))
    await ready.wait()
    started = time.perf_counter()
    gc.collect()
    print(gc.get_freeze_count(), len(gc.get_objects()), round((time.perf_counter() - started) * 1e3, 2))
    task.cancel()

asyncio.run(main())
"""


def test_serve_freezes_what_start_up_made(repo: Path):
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(repo=str(repo))], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    frozen, tracked, _ = out.stdout.split()[-3:]
    assert int(frozen) > 20_000 > int(tracked), (frozen, tracked)  # imports, grpc, numpy...: frozen
