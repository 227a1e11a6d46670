"""The handler table against the contract: every (loop, op) of genserve.protocol.LOOPS is served."""

from __future__ import annotations

from genserve.protocol import LOOPS, OPEN_INFERENCE_LOOPS, Loop, Op
from genserve.workers.loops import HANDLERS


def test_every_loop_op_of_the_protocol_has_a_handler() -> None:
    """HANDLERS holds exactly the (loop, op) pairs of protocol.LOOPS and of the Open Inference
    Protocol's table, keyed by the protocol's enums."""
    pairs = {(loop, op) for loop, spec in LOOPS.items() for op in spec.ops}
    pairs |= {(loop, Op.INFER_TENSORS) for loop in OPEN_INFERENCE_LOOPS}
    assert set(HANDLERS) == pairs
    assert all(isinstance(loop, Loop) and isinstance(op, Op) for loop, op in HANDLERS)
    assert all(callable(handler) for handler in HANDLERS.values())
