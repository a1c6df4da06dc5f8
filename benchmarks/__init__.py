"""Benchmarks behind `make bench`: ratios measured side by side in one run (DESIGN.md section 12)."""
