"""genserve: a distributed sampling service for generative models.

The product's parts live in one import namespace:
`genserve.export` (torch: models, data, training, ONNX export), `genserve.workers` (Celery +
ONNX Runtime), `genserve.services` (the gRPC gateway). This package holds what they share:
settings, the model repository and its manifest, tensor codecs and the CLI.
"""

from __future__ import annotations

__version__ = "0.1.0"
