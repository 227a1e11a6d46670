"""Long-lived objects out of the garbage collector's full passes.

CPython's cyclic collector walks every tracked object in a full (generation 2) pass: in a
gateway or worker process, with grpc, Celery, kombu, numpy and ONNX Runtime imported, that
is some 80,000 objects and 85-190 ms with every thread stopped (measured on a 2-core AMD
EPYC), and the requests in flight wait it out. Under load a gateway ran two such passes in
30 s. What exists once a process has started (modules, settings, sessions) lives as long as
the process: `gc.freeze()` moves it to the permanent generation, which no pass walks; the
passes that remain walk what requests allocate, 1-2 ms (the same run with it).
"""

from __future__ import annotations

import gc


def freeze_startup() -> None:
    """After start-up: collect what start-up left over once, then freeze the rest."""
    gc.collect()
    gc.freeze()


def freeze_loaded() -> None:
    """After loading something that lives as long as the process (a model's session)."""
    gc.freeze()
