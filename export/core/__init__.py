"""Shared machinery of every family: what a family declares (spec.py), common layers (layers.py),
checkpoints (checkpoint.py), the resumable training loop (training.py), ONNX export with parity
(onnx_export.py), publishing and the one manifest builder (publishing.py), Hugging Face
checkpoint reading (hf_weights.py) and the options a build takes (options.py)."""
