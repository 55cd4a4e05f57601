"""Benchmark helpers (reference implementations in other frameworks; imported only by launch/bench_*)."""
