"""Benchmarks: the Polars pipeline against plain pandas (run with `python -m benchmarks.<name>`)."""
