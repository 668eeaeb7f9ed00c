"""``python -m pipeline_defs.ops [--host 127.0.0.1] [--port 9464]``: the metrics and health
service. Settings as the code location reads them (``PIPELINE_CONFIG_FILE``, ``PIPELINE_*``);
the Dagster instance from ``DAGSTER_HOME``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Optional

import dagster as dg
from prometheus_client import CollectorRegistry

from pipeline_defs.ops.collector import OpsCollector, Ttls, describe_targets
from pipeline_defs.ops.health import (
    HealthChecker,
    Probe,
    dagster_probe,
    describe_error,
    http_probe,
    kafka_probe,
    storage_probe,
)
from pipeline_defs.ops.server import ops_app, serve
from pipeline_defs.ops.targets import Targets, build_targets

DEFAULT_PORT = 9464


def probes(targets: Targets, instance: dg.DagsterInstance, timeout_s: float) -> dict[str, Probe]:
    """One probe per component; a second Kafka cluster (Event Hub) is ``kafka_source``."""
    found: dict[str, Probe] = {}
    for cluster in targets.clusters:
        name = "kafka" if cluster.name == "kafka" or len(targets.clusters) == 1 else "kafka_source"
        found[name] = kafka_probe(cluster.kafka, timeout_s, cluster.topics[0] if cluster.topics else None)
    table = targets.dlq_views[0].table if targets.dlq_views else "_ops_probe"
    found["storage"] = storage_probe(targets.lake, table, timeout_s)
    found["dagster"] = dagster_probe(instance)
    if targets.claimx_api_url:
        found["claimx_api"] = http_probe(targets.claimx_api_url, timeout_s)
    return found


def _instance(log: logging.Logger, attempts: int = 10, wait_s: float = 3.0) -> dg.DagsterInstance:
    """The instance of ``DAGSTER_HOME``. Its PostgreSQL may still be starting with the stack, which
    dagster-postgres waits only seconds for, so connection failures are retried; a Dagster error
    (no ``DAGSTER_HOME``, a bad ``dagster.yaml``) is configuration that waiting does not fix."""
    for _ in range(attempts - 1):
        try:
            return dg.DagsterInstance.get()
        except Exception as exc:
            if isinstance(exc, dg.DagsterError):
                raise
            log.warning(f"Dagster instance not available yet ({describe_error(exc)}); again in {wait_s} s")
            time.sleep(wait_s)
    return dg.DagsterInstance.get()


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline_defs.ops", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("PIPELINE_OPS_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PIPELINE_OPS_PORT", DEFAULT_PORT)))
    parser.add_argument("--probe-timeout-s", type=float, default=3.0)
    parser.add_argument("--kafka-ttl-s", type=float, default=Ttls.kafka_s)
    parser.add_argument("--slow-ttl-s", type=float, default=Ttls.slow_s, help="DLQ views and run counts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("pipeline_defs.ops")
    log.setLevel(logging.INFO)

    from pipeline_defs.domains import PipelineSettings

    targets = build_targets(PipelineSettings())
    instance = _instance(log)
    checker = HealthChecker(probes(targets, instance, args.probe_timeout_s), timeout_s=args.probe_timeout_s)
    registry = CollectorRegistry(auto_describe=False)
    collector = OpsCollector(targets, instance, checker, Ttls(kafka_s=args.kafka_ttl_s, slow_s=args.slow_ttl_s))
    registry.register(collector)
    server = serve(ops_app(registry, checker), args.host, args.port)
    log.info(f"watching {json.dumps(describe_targets(targets))}")
    log.info(f"serving /metrics, /health/live, /health/ready on http://{args.host}:{server.server_port}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        collector.close()


if __name__ == "__main__":
    main()
