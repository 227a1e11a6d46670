"""The gateway<->worker contract: one table of loops, RPCs and ops, and the names on the broker."""

from __future__ import annotations

import msgpack

from genserve.protocol import (LOOP_NAMES, LOOPS, STREAM_PREFIX, UNGROUPED_OPS, Loop, Op, graphs_of_op, op_for,
                               queue_name, rpcs_of, stream_channel)
from genserve.v1 import inference_pb2


def test_every_inference_rpc_is_served_by_some_loop() -> None:
    """A method added to InferenceService without a loop entry would be unreachable: none is."""
    methods = set(inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].methods_by_name)
    served = {rpc for spec in LOOPS.values() for rpc in spec.rpcs}
    assert methods == served


def test_rpcs_of_and_op_for_read_the_one_table() -> None:
    """The gateway's RPC check and the op each RPC sends both come from LOOPS."""
    assert rpcs_of("autoregressive") == ["GenerateText", "CompleteText", "ScoreText"]
    assert op_for("autoregressive", "CompleteText") is Op.GENERATE_TEXT
    assert op_for("text_classifier", "Classify") is Op.CLASSIFY
    assert op_for("latent_sampler", "Denoise") is None
    assert rpcs_of("no_such_loop") == [] and op_for("no_such_loop", "Classify") is None
    assert LOOP_NAMES == tuple(loop.value for loop in Loop)


def test_an_rpc_needing_another_graph_is_listed_only_with_it() -> None:
    """EncodeImages needs the encoder: a GAN (or an old VAE export) lists GenerateImages only."""
    assert rpcs_of("latent_sampler") == ["GenerateImages", "EncodeImages"]
    assert rpcs_of("latent_sampler", ["model"]) == ["GenerateImages"]
    assert rpcs_of("latent_sampler", {"model": 1, "encoder": 2}) == ["GenerateImages", "EncodeImages"]
    assert op_for("latent_sampler", "EncodeImages") is Op.ENCODE_IMAGES
    assert graphs_of_op(Op.ENCODE_IMAGES) == ("encoder",) and graphs_of_op(Op.DENOISE) == ()


def test_ops_and_loops_travel_as_their_plain_strings() -> None:
    """Task payloads are msgpack: an Op packs and compares as the string workers have always read."""
    assert msgpack.unpackb(msgpack.packb({"op": Op.DENOISE})) == {"op": "denoise"}
    assert Op.DENOISE == "denoise" and str(Op.SCORE_TEXT) == "score_text" and f"{Loop.AUTOREGRESSIVE}" == "autoregressive"
    assert UNGROUPED_OPS == {"generate_text"}


def test_broker_names() -> None:
    """Queue and stream channel names, as deployed workers and gateways expect them."""
    assert queue_name("genserve", "vae") == "genserve.vae"
    assert stream_channel("abc") == STREAM_PREFIX + "abc" == "genserve:stream:abc"
