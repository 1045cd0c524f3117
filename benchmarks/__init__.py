"""Benchmarks: workloads W1-W4 against the peers (pytest-benchmark)."""
