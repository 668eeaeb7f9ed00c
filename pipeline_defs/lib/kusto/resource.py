"""Kusto as a Dagster resource, on azure-kusto-data's ``KustoClient``.

Each query has a server timeout (which also bounds the client's wait), is retried with
exponential backoff and jitter when Kusto throttles, answers 5xx or cannot be reached, and
goes through a circuit breaker: once it opens, the run's remaining windows and pages fail fast
instead of each retrying a dead cluster (the breaker lives as long as the run; across runs, the
poll sensor's stall pause spares Kusto). A query Kusto refuses for its own reasons (a semantic error, a missing table, a refused
credential) is not retried. Either way the step fails with an ``InfrastructureError``: no
record is to blame.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Optional

import dagster as dg
from azure.kusto.data import ClientRequestProperties, KustoClient, KustoConnectionStringBuilder
from azure.kusto.data.exceptions import KustoError, KustoNetworkError, KustoServiceError, KustoThrottlingError
from pydantic import PrivateAttr

from pipeline_defs.lib.attachments.circuit_breaker import CircuitBreakers
from pipeline_defs.lib.credentials import TokenFileCredential
from pipeline_defs.lib.ingest.guard import InfrastructureError

RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
RESULT_TOO_LARGE = "E_QUERY_RESULT_SET_TOO_LARGE"


class KustoConnection(dg.Config):
    """How to reach one Kusto database: a Fabric Eventhouse, Azure Data Explorer or the double."""

    cluster_url: str = "http://127.0.0.1:8768"
    database: str = "claims"
    # none: a local endpoint (the double); azure: azure-identity (workload or managed identity,
    # az login); token_file: a bearer token in ``token_file``, re-read at every request.
    auth: str = "none"
    token_file: Optional[str] = None
    query_timeout_s: float = 60.0
    max_attempts: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    circuit_failure_threshold: int = 5  # consecutive failed attempts, across the run's queries
    circuit_reset_s: float = 60.0


class KustoUnavailable(InfrastructureError):
    """Kusto did not answer (throttled, 5xx, unreachable, circuit open) after every attempt,
    or refused the query or the credential."""


class KustoResultTooLarge(KustoUnavailable):
    """The answer passed Kusto's result set limits (E_QUERY_RESULT_SET_TOO_LARGE): ask for less."""


@dataclass(frozen=True)
class KustoAnswer:
    """The primary result of one query, and what identifies the request on both sides."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    client_request_id: str
    activity_id: Optional[str]
    attempts: int
    seconds: float


class KustoResource(dg.ConfigurableResource):
    """A Kusto database. The client is built at the first query, never at import or load."""

    connection: KustoConnection

    _client: Optional[KustoClient] = PrivateAttr(default=None)
    _credential: Any = PrivateAttr(default=None)  # an azure-core TokenCredential; tests inject one
    _breakers: Optional[CircuitBreakers] = PrivateAttr(default=None)

    @property
    def breakers(self) -> CircuitBreakers:
        if self._breakers is None:
            conn = self.connection
            self._breakers = CircuitBreakers(conn.circuit_failure_threshold, conn.circuit_reset_s)
        return self._breakers

    def query(self, csl: str, parameters: Mapping[str, str], client_request_id: str) -> KustoAnswer:
        """Run ``csl`` with ``parameters`` (KQL literals), retrying what is transient."""
        conn = self.connection
        started = time.monotonic()
        last_error = "no attempt"
        for attempt in range(1, conn.max_attempts + 1):
            if not self.breakers.allow(conn.cluster_url):
                raise KustoUnavailable(f"circuit open for {conn.cluster_url} after repeated failures ({last_error})")
            try:
                response = self.client().execute_query(conn.database, csl, self._properties(parameters, client_request_id))
            except (KustoThrottlingError, KustoNetworkError) as error:
                last_error = type(error).__name__
            except KustoServiceError as error:
                if RESULT_TOO_LARGE in str(error):
                    self.breakers.record_success(conn.cluster_url)  # Kusto answered: it is up
                    raise KustoResultTooLarge(f"Kusto's answer passed its result set limits ({RESULT_TOO_LARGE})") from None
                status = _status(error)
                if status not in RETRIED_STATUSES:
                    self.breakers.record_success(conn.cluster_url)  # Kusto answered: it is up
                    raise KustoUnavailable(f"Kusto refused the query (HTTP {status}): {_first_line(error)}") from None
                last_error = f"HTTP {status}"
            except KustoError as error:
                raise KustoUnavailable(f"Kusto client error: {type(error).__name__}: {_first_line(error)}") from None
            else:
                self.breakers.record_success(conn.cluster_url)
                primary = response.primary_results[0]
                return KustoAnswer(
                    columns=[column.column_name for column in primary.columns],
                    rows=primary.raw_rows,
                    client_request_id=client_request_id,
                    activity_id=_activity_id(response),
                    attempts=attempt,
                    seconds=time.monotonic() - started,
                )
            self.breakers.record_failure(conn.cluster_url)
            if attempt < conn.max_attempts:
                time.sleep(min(conn.max_backoff_s, conn.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5))
        raise KustoUnavailable(f"Kusto query failed {conn.max_attempts} times ({last_error})")

    def client(self) -> KustoClient:
        if self._client is None:
            self._client = KustoClient(self._connection_string())
        return self._client

    def _connection_string(self) -> KustoConnectionStringBuilder:
        conn = self.connection
        if conn.auth == "none":
            return KustoConnectionStringBuilder.with_no_authentication(conn.cluster_url)
        if conn.auth == "token_file":
            if not conn.token_file:
                raise ValueError("kusto auth token_file needs kusto.token_file")
            credential = self._credential or TokenFileCredential(conn.token_file)
        elif conn.auth == "azure":
            from azure.identity import DefaultAzureCredential

            credential = self._credential or DefaultAzureCredential()
        else:
            raise ValueError(f"kusto auth {conn.auth!r}: expected none, azure or token_file")
        return KustoConnectionStringBuilder.with_azure_token_credential(conn.cluster_url, credential)

    def _properties(self, parameters: Mapping[str, str], client_request_id: str) -> ClientRequestProperties:
        properties = ClientRequestProperties()
        properties.client_request_id = client_request_id
        properties.set_option(
            ClientRequestProperties.request_timeout_option_name, timedelta(seconds=self.connection.query_timeout_s)
        )
        for name, value in parameters.items():
            properties.set_parameter(name, value)
        return properties


def _status(error: KustoServiceError) -> Optional[int]:
    response = error.get_raw_http_response()
    status = getattr(response, "status_code", None) or getattr(response, "status", None)
    return status if isinstance(status, int) else None


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [""])[0][:300]


def _activity_id(response: Any) -> Optional[str]:
    """Kusto's own id of the request (its ``x-ms-activity-id``), for a support ticket: the
    client keeps no HTTP response on success, but v2 answers repeat it in their
    QueryCompletionInformation table."""
    try:
        value = response["QueryCompletionInformation"][0]["ActivityId"]
    except (KeyError, IndexError, TypeError, LookupError):
        return None
    return str(value) if value else None
