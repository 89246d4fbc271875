"""Benchmarks and accuracy targets: `python -m bench [NAME ...] [--quick]`."""
