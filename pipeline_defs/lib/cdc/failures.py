"""Records that fail for reasons of their own: PostgreSQL refuses the batch with an error that is
neither the server's health nor a value the sink can name (a trigger raising, a constraint the
declared schema does not know, an internal error).

The batch is split in halves until the record is alone, so the records around it are applied;
its failures are counted in ``_cdc_record_failures`` (committed on their own, so a failed step
still counts). Below the limit the step fails with ``RecordFailing`` and the retry policy runs
it again: the cause may be passing (a DBA's trigger being fixed). At the limit the record goes to
the DLQ topic with its error and its offset is stored, so the table goes on without it.
"""

from __future__ import annotations

import psycopg
import psycopg.errors
from psycopg import sql

from pipeline_defs.lib.cdc.ddl import Source
from pipeline_defs.lib.ingest.guard import InfrastructureError
from pipeline_defs.lib.postgres.resource import describe, unavailable_on_failure

# What a record can cause: the server's own troubles are OperationalError (infrastructure); other
# ProgrammingErrors are a broken table or SQL, where every record would fail (infrastructure too),
# but a trigger's or function's RAISE / ASSERT (PL/pgSQL, class P0) may judge one record.
RECORD_ERRORS: tuple[type[Exception], ...] = (
    psycopg.IntegrityError,
    psycopg.InternalError,
    psycopg.DataError,
    psycopg.NotSupportedError,
    psycopg.errors.RaiseException,
    psycopg.errors.AssertFailure,
)
CATEGORY = "unprocessable"


class RecordFailing(InfrastructureError):
    """A record failed again below its limit: the step fails and its retry policy re-runs it."""


def count_failure(conn: psycopg.Connection, schema: str, group: str, source: Source, error: BaseException) -> int:
    """Add one to the record's failures (in a transaction of its own) and return the count."""
    statement = sql.SQL(
        'INSERT INTO {}."_cdc_record_failures" AS f (consumer_group, topic, "partition", "offset", failures, last_error) '
        'VALUES (%s, %s, %s, %s, 1, %s) ON CONFLICT (consumer_group, topic, "partition", "offset") '
        "DO UPDATE SET failures = f.failures + 1, last_error = excluded.last_error, last_failed_at = now() RETURNING failures"
    ).format(sql.Identifier(schema))
    with unavailable_on_failure("count a record's failure"), conn.transaction():
        row = conn.execute(statement, [group, *source, describe(error)]).fetchone()
    assert row is not None  # INSERT .. RETURNING always returns the row
    return int(row[0])


def failure_reason(source: Source, failures: int, error: BaseException) -> str:
    topic, partition, offset = source
    return f"{topic}[{partition}]@{offset} failed {failures} times: {describe(error)}"
