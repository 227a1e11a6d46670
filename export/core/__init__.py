"""Shared machinery of every family: spec, options, training loop, ONNX export, publishing."""
