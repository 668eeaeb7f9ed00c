"""The cdc section of the settings (``PIPELINE_CDC__...``): the PostgreSQL database the tables are
replicated into, the replicated tables and their declared schemas, and how deletes, stale
events and dirty records are handled."""

import dagster as dg

from pipeline_defs.lib.cdc.model import ColumnSpec, TableSpec
from pipeline_defs.lib.postgres.resource import PostgresConnection


class CdcTable(dg.Config):
    """A replicated Cassandra table: its declared columns (CQL types) and primary key."""

    keyspace: str
    table: str
    columns: dict[str, str]  # column -> CQL type, e.g. {"policy_id": "uuid", "tags": "set<text>"}
    primary_key: list[str]  # partition key columns, then clustering columns
    udts: list[str] = []  # user-defined types its columns use (stored as jsonb)

    def spec(self) -> TableSpec:
        return TableSpec(
            self.keyspace,
            self.table,
            tuple(ColumnSpec(name, cql) for name, cql in self.columns.items()),
            tuple(self.primary_key),
            tuple(self.udts),
        )


class CdcSettings(dg.Config):
    """Cassandra change events (Debezium) into PostgreSQL."""

    postgres: PostgresConnection = PostgresConnection(dbname="cdc")
    pg_schema: str = "cdc"
    tables: list[CdcTable] = []
    delete_mode: str = "hard"  # hard: DELETE (a tombstone keeps older events out) | soft: _cdc_deleted = true
    stale_after_days: float = 7.0  # events older than this are flagged in cdc_staleness_audit
    invalid_share_warn: float = 0.05  # a run whose invalid share exceeds this warns
    # A declared column is broken (a type change upstream; a blocking check fails naming it) when
    # at least this share of a run's records, and this many, do not fit it; fewer are dirty records.
    schema_break_share: float = 0.5
    schema_break_min_events: int = 5
    batch_events: int = 5_000  # events per PostgreSQL transaction
    max_record_failures: int = 10  # a record PostgreSQL refuses this often goes to dlq_topic
    max_lag_s: float = 300.0  # a run whose replication lag exceeds this warns
    tombstone_grace_days: float = 10.0  # as Cassandra's gc_grace_seconds: deleted keys are remembered this long
    reconcile_scan_events: int = 20_000  # reconciled_with_kafka reads this many applied records from each partition's end
    reconcile_sample_keys: int = 500  # and compares this many of their keys with PostgreSQL
    validation_topic: str = "cassandra.cdc.validation_errors"
    dlq_topic: str = "cassandra.cdc.dlq"
    staleness_topic: str = "cassandra.cdc.staleness_audit"


class CdcConfigResource(dg.ConfigurableResource):
    """The cdc settings, typed and visible in the UI (PostgreSQL is the ``cdc_postgres`` resource)."""

    settings: CdcSettings
