"""genserve.workers: the Celery app and ONNX Runtime execution. Never imports torch."""
