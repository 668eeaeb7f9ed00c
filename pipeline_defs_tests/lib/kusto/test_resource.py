"""The Kusto resource against the Kusto double (the real azure-kusto-data client over Kusto's
REST v2 protocol): paging, retries with backoff, what is not retried, the circuit breaker,
Kusto's request ids, and a token file credential."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline_defs.lib.credentials import TokenFileCredential, jwt_expiry
from pipeline_defs.lib.kusto.polling import kql_datetime, page_query, window_pages
from pipeline_defs.lib.kusto.resource import KustoConnection, KustoResource, KustoUnavailable
from pipeline_defs.lib.kusto.windows import PollWindow
from pipeline_sim.kusto import KustoDouble

QUERY_TABLE = "Paged"


def resource(double: KustoDouble, **changes: object) -> KustoResource:
    settings = {"cluster_url": double.base_url, "max_attempts": 3, "backoff_s": 0.01, "query_timeout_s": 5, **changes}
    return KustoResource(connection=KustoConnection(**settings))  # type: ignore[arg-type]


def window_around_now() -> PollWindow:
    now = datetime.now(UTC)
    return PollWindow(now - timedelta(minutes=5), now + timedelta(minutes=5))


def read_all(kusto: KustoResource, table: str, seen: set[str] = frozenset(), page_rows: int = 1_000) -> list[str]:  # type: ignore[assignment]
    pages = window_pages(kusto, page_query(table, "trace_id"), window_around_now(), timedelta(0), seen, page_rows, "test")
    return [row.id for rows, _ in pages for row in rows]


def test_pages_through_one_extent_without_losing_or_repeating_a_row(kusto_double: KustoDouble) -> None:
    table = "OneExtent"
    kusto_double.ingest(table, [{"trace_id": f"T{n:05d}"} for n in range(2_500)])
    ids = read_all(resource(kusto_double), table, page_rows=1_000)
    assert ids == sorted(f"T{n:05d}" for n in range(2_500))


def test_ids_already_held_are_left_out_by_kusto(kusto_double: KustoDouble) -> None:
    table = "AntiJoin"
    kusto_double.ingest(table, [{"trace_id": f"T{n}"} for n in range(10)])
    assert read_all(resource(kusto_double), table, seen={"T1", "T2"}) == [f"T{n}" for n in (0, 3, 4, 5, 6, 7, 8, 9)]


@pytest.mark.parametrize("kind", ["throttle", "error500", "error503"])
def test_throttling_and_server_errors_are_retried(kusto_double: KustoDouble, kind: str) -> None:
    table = f"Retried_{kind}"
    kusto_double.ingest(table, [{"trace_id": "T1"}])
    kusto = resource(kusto_double)
    kusto_double.fail_next(kind, count=2)
    window = window_around_now()
    answer = kusto.query(
        page_query(table, "trace_id"),
        {"window_start": kql_datetime(window.start), "window_end": kql_datetime(window.end)},
        "retried",
    )
    assert answer.attempts == 3 and [row[1] for row in answer.rows] == ["T1"]
    assert answer.activity_id  # Kusto's own id of the request, for a support ticket


def test_a_semantic_error_is_not_retried_and_names_the_cause(kusto_double: KustoDouble) -> None:
    served = kusto_double.stats()["queries"]
    with pytest.raises(KustoUnavailable, match="refused the query"):
        resource(kusto_double).query(page_query("NoSuchTable", "trace_id"), {}, "semantic")
    assert kusto_double.stats()["queries"] == served + 1


def test_the_circuit_opens_and_spares_a_failing_cluster(kusto_double: KustoDouble) -> None:
    kusto = resource(kusto_double, max_attempts=2, circuit_failure_threshold=2, circuit_reset_s=60)
    kusto_double.fail_next("error503", count=2)
    with pytest.raises(KustoUnavailable, match="failed 2 times"):
        kusto.query(page_query(QUERY_TABLE, "trace_id"), {}, "down")
    served = kusto_double.stats()["queries"]
    with pytest.raises(KustoUnavailable, match="circuit open"):
        kusto.query(page_query(QUERY_TABLE, "trace_id"), {}, "spared")
    assert kusto_double.stats()["queries"] == served  # nothing sent while the circuit is open


def test_a_token_file_is_read_at_each_request_and_its_expiry_taken_from_the_jwt(tmp_path: Path) -> None:
    expiry = int(time.time()) + 600
    claims = base64.urlsafe_b64encode(json.dumps({"exp": expiry}).encode()).decode().rstrip("=")
    token_file = tmp_path / "token"
    token_file.write_text(f"e30.{claims}.sig\n")
    credential = TokenFileCredential(str(token_file))
    assert credential.get_token("https://kusto.example/.default") == (f"e30.{claims}.sig", expiry)
    token_file.write_text("rotated")
    assert credential.get_token("scope").token == "rotated" and jwt_expiry("rotated") is None
    token_file.unlink()
    with pytest.raises(Exception, match="unreadable"):
        credential.get_token("scope")
