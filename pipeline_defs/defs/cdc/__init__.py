"""The CDC domain: Cassandra tables replicated into PostgreSQL from Debezium change events, one
asset, job and offset-range sensor per table declared under ``cdc.tables`` (built when the code
location loads, from the settings), the backfill and expiry jobs, and views of the validation
topic and the DLQ."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from pipeline_defs.defs.cdc.assets import asset_name, build_table_asset
from pipeline_defs.defs.cdc.backfill import cdc_backfill_job
from pipeline_defs.defs.cdc.expiry import expiry_definitions
from pipeline_defs.defs.cdc.reconciliation import build_reconciliation_check, reconciliation_key
from pipeline_defs.defs.cdc.settings import CdcConfigResource, CdcSettings
from pipeline_defs.lib.cdc.model import TableSpec
from pipeline_defs.lib.dlq.kinds import record_dlq
from pipeline_defs.lib.domains import Domain, DomainTopics
from pipeline_defs.lib.ingest.feeds import KafkaFeed, SensorTopic
from pipeline_defs.lib.ingest.sensors import build_offset_range_sensor
from pipeline_defs.lib.policies import scheduled_checks
from pipeline_defs.lib.postgres.resource import postgres_resource
from pipeline_defs.lib.settings import CoreSettings, section

RECONCILE_CRON = "41 * * * *"  # hourly: each table's sample of keys, Kafka against PostgreSQL


def _settings(settings: CoreSettings) -> CdcSettings:
    return section(settings, "cdc", CdcSettings)


def _resources(settings: CoreSettings) -> Mapping[str, Any]:
    own = _settings(settings)
    return {"cdc": CdcConfigResource(settings=own), "cdc_postgres": postgres_resource(own.postgres)}


def _topics(settings: CoreSettings) -> DomainTopics:
    own = _settings(settings)
    sources = [t.spec().topic for t in own.tables]
    # The validation topic and the DLQ take records of every table's topic; sized after the first.
    letters = [own.validation_topic, own.dlq_topic]
    return DomainTopics(
        plain=[*sources, own.staleness_topic, *([] if sources else letters)],
        dead_letters={topic: sources[0] for topic in letters} if sources else {},
    )


def table_parts(spec: TableSpec) -> tuple[dg.AssetsDefinition, Any, dg.SensorDefinition]:
    """A replicated table's asset, job and offset-range sensor."""
    asset = build_table_asset(spec)
    # the reconciliation check targets the asset but stays out of its micro-batch runs
    selection = dg.AssetSelection.assets(asset) - dg.AssetSelection.checks(reconciliation_key(spec))
    job = dg.define_asset_job(f"{asset_name(spec)}_job", selection=selection)
    feed = KafkaFeed(asset_name(spec), spec.pg_table, lambda _: [SensorTopic(spec.topic)])
    sensor = build_offset_range_sensor(
        name=f"{asset_name(spec)}_sensor",
        job=job,
        feed=feed,
        partitioned=False,
        description=f"Plans {spec.topic} offset ranges into runs of {asset_name(spec)}",
    )
    return asset, job, sensor


def table_definitions(spec: TableSpec) -> dg.Definitions:
    asset, job, sensor = table_parts(spec)
    return dg.Definitions(assets=[asset], jobs=[job], sensors=[sensor])


def reconciliation_definitions(specs: list[TableSpec]) -> dg.Definitions:
    """Each table's ``reconciled_with_kafka`` check, and a job and hourly schedule running them."""
    checks = [build_reconciliation_check(spec) for spec in specs]
    if not checks:
        return dg.Definitions()
    job, schedule = scheduled_checks("cdc_reconciliation", checks, RECONCILE_CRON, "Kafka's newest events against PostgreSQL")
    return dg.Definitions(asset_checks=checks, jobs=[job], schedules=[schedule])


def _build(settings: CoreSettings) -> dg.Definitions:
    specs = [t.spec() for t in _settings(settings).tables]
    return dg.Definitions.merge(
        *(table_definitions(spec) for spec in specs), reconciliation_definitions(specs), expiry_definitions(specs)
    )


DOMAIN = Domain(
    name="cdc",
    defs=dg.Definitions(jobs=[cdc_backfill_job]),
    settings=CdcSettings,
    resources=_resources,
    topics=_topics,
    build=_build,
    dlq_views=(
        record_dlq("cdc_validation", lambda r: r.cdc.settings.validation_topic, "cdc", replay_cluster="kafka"),
        record_dlq("cdc", lambda r: r.cdc.settings.dlq_topic, "cdc", replay_cluster="kafka"),
    ),
)
