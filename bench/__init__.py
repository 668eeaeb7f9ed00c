"""Benchmarks against the real local stack. Not tests: they measure, they do not assert."""
