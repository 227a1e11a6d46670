"""The seeded latent draw shared by GenerateImages and generator jobs (pure numpy).

Sample i of seed S is a pure function of (S, i): samples live in fixed blocks of BLOCK rows;
block b is drawn by its own counter-based generator,

    np.random.Generator(np.random.Philox(key=S, counter=[0, b, 0, 0])).standard_normal((BLOCK, dim), float32)

and sample i is row i % BLOCK of block i // BLOCK. Any range first_index..first_index+count-1
costs at most two partial blocks more than its own rows, whatever i is (Philox jumps to a
counter in constant time), and the bytes never depend on the batch, the chunk size, the worker
or the order in which chunks run. A generator per sample would be exact too, but creating one
costs about 10 us, which alone would cap a job near 100,000 samples/s per core.
"""

from __future__ import annotations

import numpy as np

BLOCK = 256  # samples per block; changing it changes every seeded draw (and every job's bytes)
SCHEME = f"philox-block-{BLOCK}"  # written into job manifests


def block(seed: int, index: int, dim: int) -> np.ndarray:
    """Block `index` of `seed`: (BLOCK, dim) float32 standard normals."""
    generator = np.random.Generator(np.random.Philox(key=int(seed), counter=[0, int(index), 0, 0]))
    return generator.standard_normal((BLOCK, dim), dtype=np.float32)


def latents(seed: int, first_index: int, count: int, dim: int) -> np.ndarray:
    """Samples first_index..first_index+count-1 of `seed`: (count, dim) float32."""
    out = np.empty((count, dim), dtype=np.float32)
    end = first_index + count
    row = 0
    for b in range(first_index // BLOCK, (end - 1) // BLOCK + 1 if count else 0):
        lo = max(first_index, b * BLOCK) - b * BLOCK
        hi = min(end, (b + 1) * BLOCK) - b * BLOCK
        out[row : row + hi - lo] = block(seed, b, dim)[lo:hi]
        row += hi - lo
    return out


def line_seed(seed: int, line: int) -> int:
    """The sampler seed of input line `line` of a text-generation job with seed `seed` (for a
    line that sets none): 63 bits of SeedSequence([seed, line]), so a job is reproducible."""
    state = np.random.SeedSequence([int(seed), int(line)]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))
