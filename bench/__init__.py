"""Benchmarks: throughput and resource figures measured against the real stack, never in tests."""
