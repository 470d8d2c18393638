"""Benchmarks: ratios measured side by side in one run (timings on shared machines are noisy)."""
