"""The Kusto double against the real ``azure.kusto.data.KustoClient``: paging, windows, late rows,
the anti-join, broken rows, every fault as the client's own exception, Kusto's request ids, and the
HTTP controls. No other service: the double runs in a thread on a free port."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Optional

import pytest
import requests
from azure.kusto.data import ClientRequestProperties, KustoClient, KustoConnectionStringBuilder
from azure.kusto.data.exceptions import (
    KustoApiError,
    KustoMultiApiError,
    KustoNetworkError,
    KustoServiceError,
    KustoThrottlingError,
)
from azure.kusto.data.response import KustoResponseDataSet

from pipeline_defs.lib.kusto.polling import page_query as poller_page_query
from pipeline_sim.kusto import KustoDouble
from pipeline_sim.kusto_query import (
    SemanticError,
    iso_from_ticks,
    parse_literal,
    parse_query,
    ticks_from_datetime,
    ticks_from_iso,
    timespan_seconds,
    tostring,
)

T0 = ticks_from_iso("2026-12-05T10:00:00Z")
SECOND = 10_000_000


def page_query(table: str = "XactEvents", id_column: str = "trace_id") -> str:
    """The poller's query, as it sends it."""
    return poller_page_query(table, id_column)


def page_properties(
    start: int,
    end: int,
    after: Optional[tuple[int, str, str]] = None,
    seen_ids: Optional[list[str]] = None,
    page_rows: Optional[int] = None,
) -> ClientRequestProperties:
    properties = ClientRequestProperties()
    properties.set_parameter("window_start", f"datetime({iso_from_ticks(start)})")
    properties.set_parameter("window_end", f"datetime({iso_from_ticks(end)})")
    if after is not None:
        properties.set_parameter("after_ticks", f"long({after[0]})")
        properties.set_parameter("after_id", after[1])
        properties.set_parameter("after_hash", after[2])
    if seen_ids is not None:
        properties.set_parameter("seen_ids", f"dynamic({json.dumps(seen_ids)})")
    if page_rows is not None:
        properties.set_parameter("page_rows", str(page_rows))
    return properties


def activity_id(response: KustoResponseDataSet) -> str:
    """Kusto's own id of the request (``x-ms-activity-id``), as the client exposes it on success."""
    return response["QueryCompletionInformation"][0]["ActivityId"]


def http_response(error: KustoServiceError) -> requests.Response:
    """The HTTP answer a sync client's ``KustoServiceError`` carries (Kusto's headers are on it)."""
    assert isinstance(error.http_response, requests.Response)
    return error.http_response


def rows_of(response: KustoResponseDataSet) -> list[tuple[int, str, str, Any]]:
    return [(row["_ticks"], row["_id"], row["_h"], row["_row"]) for row in response.primary_results[0]]


@pytest.fixture
def kusto() -> Iterator[KustoDouble]:
    double = KustoDouble(tables=["XactEvents", "ClaimXEvents"]).start_in_thread()
    yield double
    double.stop_thread()


@pytest.fixture
def client(kusto: KustoDouble) -> Iterator[KustoClient]:
    with KustoClient(KustoConnectionStringBuilder.with_no_authentication(kusto.base_url)) as client:
        yield client


def test_pages_through_rows_sharing_one_ingestion_time(kusto: KustoDouble, client: KustoClient):
    ticks = kusto.ingest("XactEvents", [{"trace_id": f"trace-{i:05d}", "n": i} for i in reversed(range(25_000))], T0)
    after, pages = (-1, "", ""), []
    while True:
        page = rows_of(client.execute_query("db", page_query(), page_properties(T0, T0 + SECOND, after, page_rows=10_000)))
        pages.append(len(page))
        if not page:
            break
        after = page[-1][:3]
        assert [r[:3] for r in page] == sorted(r[:3] for r in page)
        assert all(row[0] == ticks for row in page)
    assert pages == [10_000, 10_000, 5_000, 0]
    ids = [q.parameters.get("after_id") for q in kusto.queries]
    assert ids == ["", "trace-09999", "trace-19999", "trace-24999"]  # string parameters go raw


def test_all_pages_hold_every_row_once(kusto: KustoDouble, client: KustoClient):
    kusto.ingest("XactEvents", [{"trace_id": f"a{i}"} for i in range(30)], T0)
    kusto.ingest("XactEvents", [{"trace_id": f"b{i}"} for i in range(30)], T0 + 5)
    after, seen = (-1, "", ""), []
    while page := rows_of(client.execute_query("db", page_query(), page_properties(T0, T0 + SECOND, after, page_rows=7))):
        seen += [row_id for _, row_id, _, _ in page]
        after = page[-1][:3]
    assert sorted(seen) == sorted(f"{p}{i}" for p in "ab" for i in range(30)) and len(set(seen)) == 60


def test_the_window_starts_inclusive_and_ends_exclusive(kusto: KustoDouble, client: KustoClient):
    for offset in (-1, 0, SECOND - 1, SECOND):
        kusto.ingest("XactEvents", [{"trace_id": f"at{offset}"}], T0 + offset)
    page = rows_of(client.execute_query("db", page_query(), page_properties(T0, T0 + SECOND)))
    assert [row_id for _, row_id, _, _ in page] == ["at0", f"at{SECOND - 1}"]


def test_late_rows_appear_after_their_ingestion_latency_with_an_earlier_ingestion_time(kusto: KustoDouble, client: KustoClient):
    kusto.ingest("XactEvents", [{"trace_id": "on-time"}], T0 + 10)
    kusto.ingest("XactEvents", [{"trace_id": "late"}], T0 + 5, visible_after_s=0.3)
    window = page_properties(T0, T0 + SECOND)
    assert [r[1] for r in rows_of(client.execute_query("db", page_query(), window))] == ["on-time"]
    assert client.execute_query("db", "XactEvents | count").primary_results[0][0]["Count"] == 1
    time.sleep(0.35)
    assert [r[1] for r in rows_of(client.execute_query("db", page_query(), window))] == ["late", "on-time"]
    # past the cursor of the first read, the late row is behind it: only a re-read of the window finds it
    assert rows_of(client.execute_query("db", page_query(), page_properties(T0, T0 + SECOND, (T0 + 10, "on-time", "~")))) == []


def test_seen_ids_are_left_out(kusto: KustoDouble, client: KustoClient):
    kusto.ingest("ClaimXEvents", [{"event_id": f"e{i}"} for i in range(5)], T0)
    properties = page_properties(T0, T0 + SECOND, seen_ids=["e1", "e3", "not-there"])
    page = rows_of(client.execute_query("db", page_query("ClaimXEvents", "event_id"), properties))
    assert [r[1] for r in page] == ["e0", "e2", "e4"]
    assert kusto.queries[-1].parameters["seen_ids"] == 'dynamic(["e1", "e3", "not-there"])'
    properties.set_parameter("seen_ids", "dynamic(['e0', 'e4'])")  # KQL's single-quoted strings
    page = rows_of(client.execute_query("db", page_query("ClaimXEvents", "event_id"), properties))
    assert [r[1] for r in page] == ["e1", "e2", "e3"]


def test_broken_rows_come_back_as_they_were_ingested(kusto: KustoDouble, client: KustoClient):
    broken: list[dict[str, Any]] = [
        {"trace_id": None, "a": 1},
        {"no_id": "missing"},
        {"trace_id": 42, "amount": "not a number"},
        {"trace_id": {"nested": [1, {"deep": None}]}, "junk": [[[]]]},
        {"trace_id": True},
        {"trace_id": 1.5},
        {"trace_id": "ünï\u0000\U0001f600", "text": "\ud800 lone surrogate"},
    ]
    kusto.ingest("XactEvents", broken, T0)
    page = rows_of(client.execute_query("db", page_query(), page_properties(T0, T0 + 1)))
    ids = ["", "", "42", '{"nested":[1,{"deep":null}]}', "true", "1.5", "ünï\u0000\U0001f600"]
    assert sorted(r[1] for r in page) == sorted(ids)
    by_id = {r[1]: r[3] for r in page}
    for row, row_id in zip(broken, ids):
        if row_id:
            assert by_id[row_id] == row
    assert sorted(r[3].get("a", 0) for r in page if r[1] == "") == [0, 1]  # two id-less rows, told apart by _h


@pytest.mark.parametrize(
    ("kind", "raised"),
    [
        ("throttle", KustoThrottlingError),
        ("error500", KustoApiError),
        ("error503", KustoApiError),
        ("semantic", KustoApiError),
        ("partial", KustoMultiApiError),
    ],
)
def test_each_fault_raises_the_clients_own_exception_then_service_resumes(kusto, client, kind, raised):
    kusto.ingest("XactEvents", [{"trace_id": "t1"}], T0)
    kusto.fail_next(kind, count=2)
    for _ in range(2):
        with pytest.raises(raised) as caught:
            client.execute_query("db", page_query(), page_properties(T0, T0 + 1))
    assert [r[1] for r in rows_of(client.execute_query("db", page_query(), page_properties(T0, T0 + 1)))] == ["t1"]
    assert kusto.stats()["faults"] == {kind: 2}
    error = caught.value
    if kind == "throttle":
        assert not isinstance(error, KustoServiceError) and error.args[1].status_code == 429
    elif kind == "partial":
        assert error.get_api_errors()[0].code == "LimitsExceeded"
    else:
        status = {"error500": 500, "error503": 503, "semantic": 400}[kind]
        assert error.http_response.status_code == status and error.is_semantic_error() == (kind == "semantic")


class QuickClient(KustoClient):
    _client_server_delta = timedelta(0)  # the real client waits servertimeout + 30 s


def test_a_slow_answer_times_the_client_out_then_service_resumes(kusto: KustoDouble):
    kusto.ingest("XactEvents", [{"trace_id": "t1"}], T0)
    kusto.fail_next("timeout", delay_s=1.5)
    properties = page_properties(T0, T0 + 1)
    properties.set_option(ClientRequestProperties.request_timeout_option_name, timedelta(seconds=1))
    with QuickClient(KustoConnectionStringBuilder.with_no_authentication(kusto.base_url)) as client:
        started = time.monotonic()
        with pytest.raises(KustoNetworkError) as caught:
            client.execute_query("db", page_query(), properties)
        assert isinstance(caught.value.__cause__, requests.exceptions.Timeout) and time.monotonic() - started < 1.4
        assert [r[1] for r in rows_of(client.execute_query("db", page_query(), properties))] == ["t1"]
    assert kusto.queries[0].options["servertimeout"] == "0:00:01"


def test_kustos_request_ids_are_readable(kusto: KustoDouble, client: KustoClient):
    kusto.ingest("XactEvents", [{"trace_id": "t1"}], T0)
    properties = page_properties(T0, T0 + 1)
    properties.client_request_id = "poller;xact;42"
    response = client.execute_query("db", page_query(), properties)
    assert activity_id(response) == kusto.queries[-1].activity_id
    assert response["QueryCompletionInformation"][0]["ClientRequestId"] == "poller;xact;42"
    assert activity_id(client.execute_query("db", page_query(), properties)) != activity_id(response)

    kusto.fail_next("error503")
    with pytest.raises(KustoApiError) as caught:
        client.execute_query("db", page_query(), properties)
    headers, context = http_response(caught.value).headers, caught.value.get_api_error().context or {}
    assert headers["x-ms-activity-id"] == context["activityId"] == kusto.queries[-1].activity_id
    assert headers["x-ms-client-request-id"] == "poller;xact;42"


def test_queries_it_does_not_understand_are_semantic_errors(kusto: KustoDouble, client: KustoClient):
    for csl in ["XactEvents | take 10", page_query("NoSuchTable"), page_query().replace("asc", "desc")]:
        with pytest.raises(KustoApiError) as caught:
            client.execute_query("db", csl)
        assert caught.value.is_semantic_error() and http_response(caught.value).status_code == 400
    assert "NoSuchTable" in kusto.queries[1].csl and kusto.stats()["served"] == 0


def test_the_http_controls(kusto: KustoDouble, client: KustoClient):
    url = kusto.url("/_double/ingest/ClaimXEvents")
    answer = requests.post(url, json={"rows": [{"event_id": "e1"}, {"event_id": "e2"}], "ingestion_time": "2026-12-05T10:00:00Z"})
    assert answer.json() == {"ingested": 2, "ingestion_time": "2026-12-05T10:00:00.0000000Z", "ingestion_ticks": T0}
    late = requests.post(url, json={"rows": [{"event_id": "late"}], "ingestion_time": None, "visible_after_s": 60}).json()
    assert requests.post(url, json={"rows": ["not an object"]}).status_code == 400
    assert requests.post(kusto.url("/_double/faults"), json={"kind": "nonsense"}).status_code == 400
    requests.post(kusto.url("/_double/faults"), json={"kind": "throttle", "count": 1}).raise_for_status()

    query = page_query("ClaimXEvents", "event_id")
    with pytest.raises(KustoThrottlingError):
        client.execute_query("db", query, page_properties(T0, T0 + 1))
    assert [r[1] for r in rows_of(client.execute_query("db", query, page_properties(T0, T0 + 1)))] == ["e1", "e2"]
    now = ticks_from_datetime(datetime.now(UTC))
    assert late["ingested"] == 1 and abs(late["ingestion_ticks"] - now) < 60 * SECOND
    everything = page_properties(min(T0, now) - 3600 * SECOND, max(T0, now) + 3600 * SECOND)
    assert [r[1] for r in rows_of(client.execute_query("db", query, everything))] == ["e1", "e2"]  # "late" is not visible yet
    stats = requests.get(kusto.url("/_double/stats")).json()
    assert stats == {"queries": 3, "served": 2, "faults": {"throttle": 1}, "rows": {"XactEvents": 0, "ClaimXEvents": 3}}


def test_parameters_take_their_defaults_and_any_literal_form(kusto: KustoDouble, client: KustoClient):
    kusto.ingest("XactEvents", [{"trace_id": f"t{i}"} for i in range(4)], T0)
    properties = ClientRequestProperties()
    properties.set_parameter("window_start", "datetime(2026-12-05 10:00)")
    properties.set_parameter("window_end", "2026-12-05T11:00:00.0000001+01:00")  # raw, with an offset: T0 + 1 tick
    assert [r[1] for r in rows_of(client.execute_query("db", page_query(), properties))] == ["t0", "t1", "t2", "t3"]
    properties.set_parameter("after_ticks", str(T0))
    properties.set_parameter("after_id", "t1")  # a raw string
    properties.set_parameter("after_hash", "~")  # past any hex digest: every row of (T0, "t1")
    properties.set_parameter("page_rows", "long(1)")
    assert [r[1] for r in rows_of(client.execute_query("db", page_query(), properties))] == ["t2"]


@pytest.mark.parametrize(
    ("literal", "kusto_type", "value"),
    [
        ("datetime(2026-12-05T10:00:00.1234567Z)", "datetime", T0 + 1_234_567),
        ("datetime(2026-12-05)", "datetime", T0 - 10 * 3600 * SECOND),
        ("datetime(null)", "datetime", None),
        ("long(-1)", "long", -1),
        (" 42 ", "long", 42),
        ("plain text", "string", "plain text"),
        ('"quoted"', "string", '"quoted"'),  # string parameters are values, not literals
        ("dynamic([])", "dynamic", []),
        ('dynamic(["a", "b"])', "dynamic", ["a", "b"]),
        ("dynamic(['a\\'', \"b\"])", "dynamic", ["a'", "b"]),
        ("dynamic(null)", "dynamic", None),
    ],
)
def test_kql_literals(literal, kusto_type, value):
    assert parse_literal(literal, kusto_type) == value


def test_kusto_conversions():
    assert ticks_from_iso("0001-01-01T00:00:00Z") == 0
    assert ticks_from_iso("1970-01-01T00:00:00Z") == 621_355_968_000_000_000
    assert iso_from_ticks(T0 + 1) == "2026-12-05T10:00:00.0000001Z"
    assert ticks_from_datetime(datetime(2026, 12, 5, 11, tzinfo=UTC) - timedelta(hours=1)) == T0
    assert [tostring(v) for v in (None, "x", 7, 2.0, 0.5, False, {"a": [1]})] == ["", "x", "7", "2", "0.5", "false", '{"a":[1]}']
    with pytest.raises(SemanticError, match="Semantic error"):
        parse_literal("datetime(yesterday)", "datetime")
    assert [timespan_seconds(str(timedelta(seconds=s))) for s in (1, 90.5, 86_400 * 2 + 3)] == [1, 90.5, 172_803]
    assert (timespan_seconds("1.00:00:10"), timespan_seconds(30), timespan_seconds("soon")) == (86_410, 30, None)


def test_query_shapes():
    spaced = page_query().replace("\n", "\n   ").replace(" | ", "|") + "  // the poller\n"
    assert parse_query(spaced) == parse_query(page_query())
    with pytest.raises(SemanticError, match="Failed to resolve scalar expression named 'page_rows'"):
        parse_query(page_query().replace(", page_rows:long", ""))
    with pytest.raises(SemanticError, match="must be declared datetime"):
        parse_query(page_query().replace("window_start:datetime", "window_start:string"))
    declared = page_query().replace("page_rows:long", "page_rows:long = 3")
    assert parse_query(declared).defaults["page_rows"] == 3  # type: ignore[union-attr]


def test_in_process_ingest_rejects_rows_that_are_not_objects(kusto: KustoDouble):
    with pytest.raises(ValueError, match="JSON object"):
        kusto.ingest("XactEvents", ["a string", {"trace_id": "ok"}])  # type: ignore[list-item]
    assert kusto.stats()["rows"]["XactEvents"] == 0


def test_retention_drops_rows_ingested_longer_ago():
    double = KustoDouble(tables=["XactEvents"], retention_s=3600).start_in_thread()
    try:
        with KustoClient(KustoConnectionStringBuilder.with_no_authentication(double.base_url)) as client:
            now = ticks_from_datetime(datetime.now(UTC))
            window = page_properties(now - 3 * 3600 * SECOND, now + 3600 * SECOND)
            assert rows_of(client.execute_query("db", page_query(), window)) == []  # builds the trace_id index
            double.ingest("XactEvents", [{"trace_id": "old"}], now - 2 * 3600 * SECOND)
            double.ingest("XactEvents", [{"trace_id": "new"}], now)
            assert [r[1] for r in rows_of(client.execute_query("db", page_query(), window))] == ["new"]
            assert double.stats()["rows"] == {"XactEvents": 1}
    finally:
        double.stop_thread()


def test_cleared_faults_are_not_served(kusto: KustoDouble, client: KustoClient):
    kusto.fail_next("throttle", count=3)
    with pytest.raises(KustoThrottlingError):
        client.execute_query("db", "XactEvents | count")
    kusto.clear_faults()
    assert client.execute_query("db", "XactEvents | count").primary_results[0][0]["Count"] == 0
    with pytest.raises(ValueError, match="unknown fault"):
        kusto.fail_next("gremlins")
