"""Batch jobs, the parts gateway and workers share: job records and their Redis store,
the result layout (shards, manifest, verification) and input-file parsing."""
