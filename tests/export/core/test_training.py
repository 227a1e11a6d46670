"""keep_freed_memory (export/core/training.py): freed tensors' memory is reused, not mapped anew.

Each case runs in a fresh interpreter, since the setting lasts for the process. The measure
is the kernel's count of minor page faults while a 32 MiB tensor (the GPT's logits at
2,048 x 4,096) is allocated, written and freed 40 times: a fresh mapping faults once per
4 KiB page written, 8,192 times a round; kept in the heap, the memory faults only while the
heap grows to its working size (6 rounds' worth of faults on glibc 2.36, then none).
"""

from __future__ import annotations

import subprocess
import sys

ROUNDS, PAGES = 40, 32 * 1024 * 1024 // 4096

PROGRAM = f"""
import resource, sys, torch
from genserve.export.core.training import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
torch.empty(8 << 20).fill_(1.0)  # the first allocation faults either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({ROUNDS}):
    torch.empty(8 << 20).fill_(1.0)  # 32 MiB of float32
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], check=True, capture_output=True, text=True)
    kept, count = out.stdout.split()
    return kept, int(count)


def test_large_tensors_reuse_their_memory_once_it_is_kept():
    kept, with_setting = faults("keep")
    _, without = faults("default")
    assert kept == "True"
    assert without >= ROUNDS * PAGES * 0.9  # glibc's default: a fresh mapping each round
    assert with_setting <= without / 3  # reused once the heap has grown
