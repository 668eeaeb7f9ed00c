"""A Kusto (Azure Data Explorer / Fabric Eventhouse) double on 127.0.0.1 speaking Kusto's REST v2
query protocol, so the real client talks to it unchanged::

    client = KustoClient(KustoConnectionStringBuilder.with_no_authentication(double.base_url))

    POST /v2/rest/query           {"db", "csl", "properties"}: the v2 frames (DataSetHeader, QueryProperties,
                                  PrimaryResult, QueryCompletionInformation, DataSetCompletion)
    POST /_double/ingest/<table>  {"rows": [{...}], "ingestion_time": ISO or null, "visible_after_s": s}
    POST /_double/faults          {"kind": ..., "count": n, "delay_s": s}
    GET  /_double/stats           queries received and served, faults served, rows per table

Started by ``python -m pipeline_sim kusto --port 8768`` (``--table`` repeatable), or in-process with
``KustoDouble(tables=[...]).start_in_thread()``. Without authentication the client has no AAD helper:
it neither calls ``/v1/rest/auth/metadata`` nor checks trusted endpoints (which let loopback through
anyway). ``/v1/rest/mgmt`` is not needed and answers 404 (the client's ``KustoServiceError``).

Queries: only the poller's page query and ``<Table> | count`` (``pipeline_sim.kusto_query``); a table
that was never created or ingested into is a semantic error, as in Kusto. Rows are JSON objects kept
as ingested; a batch shares one ingestion_time (an extent, .NET ticks of 100 ns) and, with
``visible_after_s``, stays invisible that long (ingestion latency: late rows). ``_row`` is the
stored object (``pack_all()`` before the paging columns are added) (real ``pack_all()`` would also list the table's other
columns as nulls). Per table and id column the rows are kept sorted by (ticks, id), so a page is a
bisect and a short scan. ``retention_s`` (``--retention-s``) drops rows ingested longer ago (else
they stay: ~1 KB a row). ``queries`` holds the last 10,000 ``ReceivedQuery`` (csl, parameters as
sent, options, client_request_id, activity_id), ``stats()`` the counts ``/_double/stats`` answers.

Kusto's request id: every answer carries ``x-ms-activity-id`` (new per request) and
``x-ms-client-request-id`` (the client's, ``KPC.execute;<uuid>`` unless
``ClientRequestProperties.client_request_id`` is set). The client keeps no HTTP response on success,
so read them, as from real Kusto, in the QueryCompletionInformation table:
``response["QueryCompletionInformation"][0]["ActivityId"]`` (and ``["ClientRequestId"]``). On failure:
``error.http_response.headers["x-ms-activity-id"]`` (``KustoServiceError`` and subclasses; a
``KustoThrottlingError`` has the response as ``error.args[1]``), or
``error.get_api_error().context["activityId"]`` (``KustoApiError``).

Faults, ``fail_next(kind, count=1, delay_s=None)``: the next ``count`` queries, then normal service::

    throttle  429 QueryThrottledException      -> KustoThrottlingError (a KustoError, not a KustoServiceError)
    error500  500 KustoServiceException        -> KustoApiError (a KustoServiceError)
    error503  503 ServiceUnavailableException  -> KustoApiError
    semantic  400 SemanticException            -> KustoApiError, is_semantic_error() (also any query not understood)
    timeout   answers after delay_s            -> KustoNetworkError (from requests' ReadTimeout) once delay_s
              exceeds the client's timeout, servertimeout + 30 s (KustoClient._client_server_delta; whole
              seconds); by default 1 s more than that (the client's default: 4 min 30 s)
    partial   200, the page then a OneApiErrors row (E_QUERY_RESULT_SET_TOO_LARGE) -> KustoMultiApiError
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional, Union

from aiohttp import web

from pipeline_sim.http_server import LocalHttpServer
from pipeline_sim.kusto_query import (
    PAGE_COLUMNS,
    TICKS_PER_SECOND,
    UNIX_EPOCH_TICKS,
    CountQuery,
    SemanticError,
    Table,
    iso_from_ticks,
    page_parameters,
    parse_query,
    ticks_from_datetime,
    ticks_from_iso,
    timespan_seconds,
)

log = logging.getLogger("pipeline_sim.kusto")
DEFAULT_TABLES = ("XactEvents", "ClaimXEvents")
# kind: HTTP status, code, message, @type, @message, @permanent (Kusto's OneApi error body)
FAULTS = {
    "throttle": (429, "TooManyRequests", "Request is denied due to throttling.", "Kusto.DataNode.Exceptions.QueryThrottledException",
                 "The request was denied due to throttling: the workload group's request rate limit policy was exceeded.", False),
    "error500": (500, "Internal service error", "Request aborted due to an internal service error.", "Kusto.Data.Exceptions.KustoServiceException",
                 "Request aborted due to an internal service error (the Kusto double was told to fail).", False),
    "error503": (503, "ServiceUnavailable", "Service is unavailable.", "Kusto.Common.Svc.Exceptions.ServiceUnavailableException",
                 "The service is temporarily unavailable; retry later.", False),
    "semantic": (400, "General_BadRequest", "Request is invalid and cannot be executed.", "Kusto.Data.Exceptions.SemanticException",
                 "Semantic error: SEM0100: the Kusto double was told to reject this query.", True),
}  # fmt: skip
KINDS = frozenset({*FAULTS, "timeout", "partial"})
PARTIAL_MESSAGE = (
    "Query execution has exceeded the allowed limits (80DA0003): The results of this query exceed the set limit of 500000 "
    "records, so not all records were returned (E_QUERY_RESULT_SET_TOO_LARGE, 0x80DA0003, max #records=500000)."
)
COMPLETION_COLUMNS = [
    ("Timestamp", "datetime"), ("ClientRequestId", "string"), ("ActivityId", "guid"), ("SubActivityId", "guid"),
    ("ParentActivityId", "guid"), ("Level", "int"), ("LevelName", "string"), ("StatusCode", "int"), ("StatusCodeName", "string"),
    ("EventType", "int"), ("EventTypeName", "string"), ("Payload", "string"),
]  # fmt: skip


@dataclass(frozen=True)
class ReceivedQuery:
    db: Optional[str]
    csl: str
    parameters: dict[str, Any]  # properties.Parameters: KQL literal strings, as sent
    options: dict[str, Any]
    client_request_id: str
    activity_id: str


def _ticks_of(moment: Union[None, int, str, datetime]) -> int:
    if moment is None:
        return time.time_ns() // 100 + UNIX_EPOCH_TICKS
    if isinstance(moment, datetime):
        return ticks_from_datetime(moment)
    if isinstance(moment, str):
        return ticks_from_iso(moment)
    if isinstance(moment, int) and not isinstance(moment, bool):
        return moment
    raise ValueError(f"ingestion_time must be None, ticks, an ISO string or a datetime, not {moment!r}")


class KustoDouble(LocalHttpServer):
    def __init__(
        self, port: int = 0, host_name: str = "127.0.0.1", tables: Iterable[str] = (), retention_s: Optional[float] = None
    ):
        super().__init__(port, host_name)
        self.retention_s = retention_s  # rows ingested longer ago are dropped (None: all kept)
        self.queries: deque[ReceivedQuery] = deque(maxlen=10_000)  # the last queries received, faulted or not
        self.received = 0
        self.served = 0  # answered with results
        self.faults_served: Counter[str] = Counter()
        self._expired_at = 0.0
        self._tables: dict[str, Table] = {name: Table() for name in tables}
        self._faults: deque[tuple[str, float]] = deque()
        self._lock = threading.Lock()
        self._stopping: Optional[asyncio.Event] = None

    def __getstate__(self) -> dict[str, Any]:  # start_in_process pickles the double
        return {**self.__dict__, "_lock": None, "_stopping": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    # ---- controls -------------------------------------------------------------------------
    def create_table(self, table: str) -> None:
        with self._lock:
            self._tables.setdefault(table, Table())

    def ingest(
        self,
        table: str,
        rows: Iterable[Mapping[str, Any]],
        ingestion_time: Union[None, int, str, datetime] = None,
        visible_after_s: float = 0.0,
    ) -> int:
        """Add ``rows`` (JSON objects, kept as given) as one extent; returns its ingestion_time in
        ticks. ``ingestion_time``: ticks, ISO text or a datetime (naive is UTC); default now."""
        batch = list(rows)
        if not all(isinstance(row, Mapping) for row in batch):
            raise ValueError("each row must be a JSON object")
        texts = [json.dumps(dict(row), default=str) for row in batch]  # kept as JSON would carry them
        ticks, visible_at = _ticks_of(ingestion_time), time.monotonic() + float(visible_after_s)
        with self._lock:
            self._tables.setdefault(table, Table()).add(ticks, visible_at, texts)
            if self.retention_s is not None and time.monotonic() - self._expired_at > 10:
                self._expired_at = time.monotonic()
                cutoff = _ticks_of(None) - int(self.retention_s * TICKS_PER_SECOND)
                for each in self._tables.values():
                    each.expire(cutoff)
        return ticks

    def fail_next(self, kind: str, count: int = 1, delay_s: Optional[float] = None) -> None:
        """Answer the next ``count`` queries with fault ``kind`` (see the module doc)."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(KINDS)}")
        self._faults.extend([(kind, -1.0 if delay_s is None else float(delay_s))] * count)

    def clear_faults(self) -> None:
        """Forget the faults not served yet (a double shared between tests)."""
        self._faults.clear()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            rows = {name: len(table.rows) for name, table in self._tables.items()}
        return {"queries": self.received, "served": self.served, "faults": dict(self.faults_served), "rows": rows}

    # ---- serving --------------------------------------------------------------------------
    async def start(self) -> None:
        self._stopping = asyncio.Event()
        await super().start()

    async def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()  # wakes the slow ("timeout") answers, or cleanup would wait for them
        await super().stop()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024**2)
        app.router.add_post("/v2/rest/query", self._query)
        app.router.add_post("/_double/ingest/{table}", self._ingest)
        app.router.add_post("/_double/faults", self._fault)
        app.router.add_get("/_double/stats", self._stats)
        return app

    async def _ingest(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            rows = body.get("rows") or []
            ticks = self.ingest(request.match_info["table"], rows, body.get("ingestion_time"), body.get("visible_after_s") or 0.0)
        except (ValueError, TypeError, AttributeError) as error:
            return web.json_response({"error": str(error)}, status=400)
        return web.json_response({"ingested": len(rows), "ingestion_time": iso_from_ticks(ticks), "ingestion_ticks": ticks})

    async def _fault(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            self.fail_next(body["kind"], int(body.get("count", 1)), body.get("delay_s"))
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            return web.json_response({"error": str(error)}, status=400)
        return web.json_response({"pending": len(self._faults)})

    async def _stats(self, _: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _query(self, request: web.Request) -> web.Response:
        activity_id = str(uuid.uuid4())
        client_request_id = request.headers.get("x-ms-client-request-id") or f"KD.execute;{uuid.uuid4()}"
        headers = {"x-ms-activity-id": activity_id, "x-ms-client-request-id": client_request_id}
        try:
            body = await request.json()
            properties = body.get("properties") or {}
            properties = json.loads(properties) if isinstance(properties, str) else properties
            parameters, options = dict(properties.get("Parameters") or {}), dict(properties.get("Options") or {})
            received = ReceivedQuery(body.get("db"), str(body["csl"]), parameters, options, client_request_id, activity_id)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            return self._error("semantic", headers, f"Request is invalid and cannot be processed: {error}")
        self.queries.append(received)
        self.received += 1
        kind, delay_s = self._faults.popleft() if self._faults else ("", 0.0)
        if kind:
            self.faults_served[kind] += 1
        if kind in FAULTS:
            return self._error(kind, headers)
        if kind == "timeout" and self._stopping is not None:
            if delay_s < 0:  # just past the client's own timeout
                delay_s = (timespan_seconds(received.options.get("servertimeout")) or 270.0) + 31.0
            with contextlib.suppress(TimeoutError):  # a slow answer: the client gives up first
                await asyncio.wait_for(self._stopping.wait(), delay_s)
        try:
            columns, rows = self._run(received)
        except SemanticError as error:
            return self._error("semantic", headers, str(error))
        self.served += 1
        partial = {"error": self._error_body("LimitsExceeded", "Request is invalid and cannot be executed.",
                                           "Kusto.Data.Exceptions.KustoServicePartialQueryFailureLimitsExceededException",
                                           PARTIAL_MESSAGE, True, headers)} if kind == "partial" else None  # fmt: skip
        return web.Response(text=_frames(columns, rows, headers, partial), content_type="application/json", headers=headers)

    def _run(self, received: ReceivedQuery) -> tuple[list[tuple[str, str]], list[str]]:
        query = parse_query(received.csl)
        with self._lock:
            if query.table not in self._tables:
                raise SemanticError(f"'table' operator: Failed to resolve table expression named '{query.table}'")
            table, now = self._tables[query.table], time.monotonic()
            if isinstance(query, CountQuery):
                return [("Count", "long")], [json.dumps([table.count(now)])]
            return PAGE_COLUMNS, table.page(query, page_parameters(query, received.parameters), now)

    def _error(self, kind: str, headers: dict[str, str], detail: Optional[str] = None) -> web.Response:
        status, code, message, type_, default, permanent = FAULTS[kind]
        body = {"error": self._error_body(code, message, type_, detail or default, permanent, headers)}
        return web.json_response(body, status=status, headers=headers)

    @staticmethod
    def _error_body(code: str, message: str, type_: str, detail: str, permanent: bool, headers: dict) -> dict:
        activity_id = headers["x-ms-activity-id"]
        context = {
            "timestamp": iso_from_ticks(_ticks_of(None)), "serviceAlias": "KUSTO-DOUBLE", "machineName": "KEngine000000",
            "processName": "pipeline_sim.kusto", "processId": os.getpid(), "threadId": threading.get_ident(),
            "clientRequestId": headers["x-ms-client-request-id"], "activityId": activity_id, "subActivityId": str(uuid.uuid4()),
            "activityType": "GW.Http.CallContext", "parentActivityId": activity_id, "activityStack": f"(Activity stack: {activity_id})",
        }  # fmt: skip
        return {
            "code": code,
            "message": message,
            "@type": type_,
            "@message": detail,
            "@context": context,
            "@permanent": permanent,
        }


def _table_frame(table_id: int, kind: str, name: str, columns: list[tuple[str, str]], rows_json: str) -> str:
    columns_json = json.dumps([{"ColumnName": n, "ColumnType": t} for n, t in columns])
    head = {"FrameType": "DataTable", "TableId": table_id, "TableKind": kind, "TableName": name}
    return f'{json.dumps(head)[:-1]},"Columns":{columns_json},"Rows":[{rows_json}]}}'


HEADER_FRAME = json.dumps({"FrameType": "DataSetHeader", "IsProgressive": False, "Version": "v2.0", "IsFragmented": False,
                           "ErrorReportingPlacement": "InData"})  # fmt: skip
VISUALIZATION = {"Visualization": None, "Title": None, "XColumn": None, "Series": None, "YColumns": None}
PROPERTIES_FRAME = _table_frame(0, "QueryProperties", "@ExtendedProperties", [("TableId", "int"), ("Key", "string"),
                                ("Value", "dynamic")], json.dumps([1, "Visualization", json.dumps(VISUALIZATION)]))  # fmt: skip


def _frames(columns: list[tuple[str, str]], rows: list[str], headers: dict[str, str], error: Optional[dict]) -> str:
    """The v2 answer, one JSON array of frames; the page's rows are JSON already."""
    now, crid, activity_id = iso_from_ticks(_ticks_of(None)), headers["x-ms-client-request-id"], headers["x-ms-activity-id"]

    def event(status: str, event_type: int, event_name: str, payload: Any, level: int = 4) -> str:
        status_code, level_name = (0, "Info") if level == 4 else (-2133196797, "Error")
        ids = [crid, activity_id, str(uuid.uuid4()), activity_id]
        return json.dumps([now, *ids, level, level_name, status_code, status, event_type, event_name, json.dumps(payload)])

    completion = [
        event("S_OK (0)", 4, "QueryInfo", {"Count": 1, "Text": "Query completed successfully"}),
        event("S_OK (0)", 5, "WorkloadGroup", {"Count": 1, "Text": "default"}),
        event(
            "S_OK (0)",
            0,
            "QueryResourceConsumption",
            {"ExecutionTime": 0.0, "dataset_statistics": [{"table_row_count": len(rows)}]},
        ),
    ]
    if error:
        completion.append(
            event("E_QUERY_RESULT_SET_TOO_LARGE (0x80DA0003)", 4, "QueryInfo", {"Count": 1, "Text": PARTIAL_MESSAGE}, 2)
        )
        rows = [*rows, json.dumps({"OneApiErrors": [error]})]
    end = {
        "FrameType": "DataSetCompletion",
        "HasErrors": bool(error),
        "Cancelled": False,
        **({"OneApiErrors": [error]} if error else {}),
    }
    primary = _table_frame(1, "PrimaryResult", "PrimaryResult", columns, ",".join(rows))
    status = _table_frame(2, "QueryCompletionInformation", "QueryCompletionInformation", COMPLETION_COLUMNS, ",".join(completion))
    return f"[{HEADER_FRAME},{PROPERTIES_FRAME},{primary},{status},{json.dumps(end)}]"


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="pipeline-sim kusto", description="The Kusto double (pipeline_sim.kusto).")
    parser.add_argument("--port", type=int, default=8768, help="0: any free port (logged)")
    parser.add_argument("--retention-s", type=float, default=None, help="drop rows ingested longer ago (default: keep all)")
    parser.add_argument("--table", action="append", help=f"a table to create empty (default: {', '.join(DEFAULT_TABLES)})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def serve() -> None:
        double = KustoDouble(port=args.port, tables=args.table or DEFAULT_TABLES, retention_s=args.retention_s)
        await double.start()
        log.info(f"Kusto double on {double.base_url} (tables {', '.join(double.stats()['rows'])})")
        try:
            await asyncio.Event().wait()
        finally:
            await double.stop()

    asyncio.run(serve())
