"""Benchmarks: `make bench` (python -m tests.bench.run) prints FireLink's performance figures."""
