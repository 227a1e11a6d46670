"""Compatibility only: services/text.py still imports STREAM_PREFIX from here.

The generation loop moved to `genserve.workers.autoregressive` and `workers.loops.text_generation`;
the channel prefix belongs to the gateway<->worker contract, `genserve.protocol`. Delete this
file once services/text.py imports `genserve.protocol.STREAM_PREFIX` (or `stream_channel`).
"""

from genserve.protocol import STREAM_PREFIX

__all__ = ["STREAM_PREFIX"]
