"""The metrics and health service (``python -m pipeline_defs.ops``): Prometheus metrics on
``/metrics`` (consumer lag, DLQs, items processed and failed, asset freshness, runs, circuit
breakers, write failures, latency, CDC replication lag) and ``/health/live`` and
``/health/ready``. Nothing here runs at import; the metric names are in ``names``."""
