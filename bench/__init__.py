"""Benchmarks: `make bench` (python -m bench). Tables, never timed tests."""
