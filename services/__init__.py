"""genserve.services: the grpc.aio gateway. Validates, groups and enqueues; never imports torch."""
