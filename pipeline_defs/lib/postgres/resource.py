"""PostgreSQL as a Dagster resource, on psycopg 3.

A connection is opened only when a step asks for one (never at import or load), with a connect
timeout and a statement timeout, through a circuit breaker keyed by host and port so a dead
server is not hammered by every run. What says the server is down or the transaction lost a race
(connection refused or lost, admin shutdown, serialization failure, deadlock, timeout) becomes
``PostgresUnavailable``: no record is to blame, the step fails and its retry policy runs it
again. Messages name the server and psycopg's error class, never the password or a DSN.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

import dagster as dg
import psycopg
from pydantic import PrivateAttr

from pipeline_defs.lib.attachments.circuit_breaker import CircuitBreakers
from pipeline_defs.lib.ingest.guard import InfrastructureError


class PostgresConnection(dg.Config):
    """How to reach one PostgreSQL database (the password comes from ``password_env``)."""

    host: str = "127.0.0.1"
    port: int = 5432
    dbname: str = "postgres"
    user: str = "postgres"
    password_env: Optional[str] = None  # the variable the caller binds with dg.EnvVar
    connect_timeout_s: int = 10
    statement_timeout_s: float = 300.0
    application_name: str = "pipeline_defs"
    sslmode: str = "prefer"
    circuit_failure_threshold: int = 3
    circuit_reset_s: float = 60.0


class PostgresUnavailable(InfrastructureError):
    """PostgreSQL is unreachable, went away, or aborted the transaction for concurrency
    (serialization failure, deadlock): retrying the step is the cure."""


# Failures that are the server's or the network's, not a record's: OperationalError covers
# connection failures, admin shutdown, query cancel/timeout, serialization failure and deadlock.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg.InterfaceError)


def describe(error: BaseException) -> str:
    """psycopg's class and SQLSTATE, and the server's primary message (never a DSN)."""
    sqlstate = getattr(error, "sqlstate", None)
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    detail = f" [{sqlstate}]" if sqlstate else ""
    return f"{type(error).__name__}{detail}" + (f": {primary[:200]}" if primary else "")


@contextmanager
def unavailable_on_failure(where: str) -> Iterator[None]:
    """Re-raise connection and concurrency failures inside the block as ``PostgresUnavailable``."""
    try:
        yield
    except UNAVAILABLE_ERRORS as error:
        raise PostgresUnavailable(f"PostgreSQL {where}: {describe(error)}") from None


class PostgresResource(dg.ConfigurableResource):
    """One PostgreSQL database; ``password`` is bound with ``dg.EnvVar`` by the caller."""

    connection: PostgresConnection
    password: Optional[str] = None

    _breakers: Optional[CircuitBreakers] = PrivateAttr(default=None)

    @property
    def breakers(self) -> CircuitBreakers:
        if self._breakers is None:
            conn = self.connection
            self._breakers = CircuitBreakers(conn.circuit_failure_threshold, conn.circuit_reset_s)
        return self._breakers

    @property
    def server(self) -> str:
        conn = self.connection
        return f"{conn.host}:{conn.port}/{conn.dbname}"

    def connect(self, autocommit: bool = True) -> psycopg.Connection:
        """A new connection (autocommit by default: transactions are explicit blocks)."""
        conn = self.connection
        key = f"{conn.host}:{conn.port}"
        if not self.breakers.allow(key):
            raise PostgresUnavailable(f"PostgreSQL {self.server}: circuit open after repeated connection failures")
        try:
            connection = psycopg.connect(
                host=conn.host,
                port=conn.port,
                dbname=conn.dbname,
                user=conn.user,
                password=self.password or None,
                connect_timeout=conn.connect_timeout_s,
                application_name=conn.application_name,
                sslmode=conn.sslmode,
                options=f"-c statement_timeout={int(conn.statement_timeout_s * 1000)}",
                autocommit=autocommit,
            )
        except psycopg.Error as error:
            # libpq's connection messages name host and port but never the password.
            self.breakers.record_failure(key)
            raise PostgresUnavailable(
                f"PostgreSQL {self.server}: cannot connect: {type(error).__name__}: {_first_line(error)}"
            ) from None
        self.breakers.record_success(key)
        return connection


def postgres_resource(connection: PostgresConnection) -> PostgresResource:
    """The resource with its password bound to ``connection.password_env`` via ``dg.EnvVar``
    (resolved by Dagster at run time, never shown)."""
    password = dg.EnvVar(connection.password_env) if connection.password_env else None
    return PostgresResource(connection=connection, password=password)


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [""])[0][:300]
