"""Benchmarks: this runtime side by side with the official livekit-agents worker.

`make bench` runs `python -m bench.runtime`. Nothing here is a test and nothing asserts a timing;
the benchmark measures, prints a table and writes its results under `bench/results/`.
"""
