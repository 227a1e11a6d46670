"""The autoregressive loop's machinery: token-by-token generation with a key/value cache.

    scheduler.py   DecodeScheduler: one thread per model version batches every generation's
                   decode steps (iteration-level batching); Sequence is one request in it
    cache.py       CacheSpec, DecodeBatch: the running batch's keys/values, written in place
    streaming.py   StreamSink, StreamPublisher: tokens to the client while the batch decodes
    sampling.py    SamplingParams, next_tokens, TextState: sampling and streamed text, in numpy
    scoring.py     log_likelihood: ScoreText's windowed scoring

The Celery-facing handlers that use them are in `genserve.workers.loops.text_generation`.
"""
