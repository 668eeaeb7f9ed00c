"""CDC's test resources: a PostgreSQL database of the session on the test stack, and per test
the demo tables under a keyspace of their own (so their topics and PostgreSQL tables are too)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace

import psycopg
import pytest
from psycopg import sql

from pipeline_defs.defs.cdc.settings import CdcConfigResource, CdcSettings, CdcTable
from pipeline_defs.lib.cdc.model import TableSpec
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.postgres.resource import PostgresConnection, PostgresResource
from pipeline_defs_tests.support.stack import LocalStack
from pipeline_sim.cdc import DEMO_TABLES


@pytest.fixture(scope="session")
def cdc_database(test_stack: LocalStack) -> Iterator[str]:
    name = f"cdc_test_{uuid.uuid4().hex[:12]}"
    admin = f"host=127.0.0.1 port={test_stack.pg_port} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield f"host=127.0.0.1 port={test_stack.pg_port} user=postgres dbname={name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def cdc_specs() -> tuple[TableSpec, ...]:
    keyspace = f"claims_{uuid.uuid4().hex[:8]}"
    return tuple(replace(spec, keyspace=keyspace) for spec in DEMO_TABLES)


def declared(spec: TableSpec) -> CdcTable:
    columns = {c.name: c.cql_type for c in spec.columns}
    return CdcTable(
        keyspace=spec.keyspace, table=spec.table, columns=columns, primary_key=list(spec.primary_key), udts=list(spec.udts)
    )


@pytest.fixture
def cdc_resources(test_stack: LocalStack, cdc_database: str, cdc_specs) -> dict[str, object]:
    prefix = cdc_specs[0].keyspace
    settings = CdcSettings(
        postgres=PostgresConnection(port=test_stack.pg_port, dbname=cdc_database.rsplit("=", 1)[1]),
        pg_schema=prefix,
        tables=[declared(spec) for spec in cdc_specs],
        validation_topic=f"{prefix}.validation_errors",
        staleness_topic=f"{prefix}.staleness_audit",
        dlq_topic=f"{prefix}.dlq",
        batch_events=500,
    )
    return {"cdc": CdcConfigResource(settings=settings), "cdc_postgres": PostgresResource(connection=settings.postgres)}


@pytest.fixture
def cdc_topics(cdc_resources: dict[str, object], kafka: KafkaResource) -> Iterator[CdcSettings]:
    """The test's table topics, validation, staleness and DLQ topics, created for it and deleted after."""
    settings = cdc_resources["cdc"].settings  # type: ignore[attr-defined]
    names = [*(t.spec().topic for t in settings.tables), settings.validation_topic, settings.staleness_topic, settings.dlq_topic]
    kafka.create_topics(names, 3)
    yield settings
    kafka.admin().delete_topics(names, operation_timeout=30)
