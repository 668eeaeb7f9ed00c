"""Operator tools: ``pipeline-dlq`` and ``pipeline-topics``."""
