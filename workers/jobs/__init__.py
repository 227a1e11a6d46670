"""The worker's side of batch jobs: the chunk runner and its Celery task."""
