"""Reading one poll window of a Kusto table, page by page.

The query is parameterised (``declare query_parameters``), so no value is ever spliced into
KQL text. Pages are ordered by ``(ingestion ticks, id)`` and each page resumes strictly after
the last row of the previous one: a batch ingested together shares one ingestion time, so
paging by time alone would lose or repeat rows. Ids the pipeline already holds are excluded in
Kusto (``not(_id in (seen_ids))``, the seed's anti-join). Each row comes back whole as one
dynamic value (``pack_all()``), so a row of any shape reaches the poller, which decides.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pipeline_defs.lib.kusto.resource import KustoAnswer, KustoResource, KustoUnavailable
from pipeline_defs.lib.kusto.windows import PollWindow

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_PAGE_QUERY = """declare query_parameters(window_start:datetime, window_end:datetime, after_ticks:long, after_id:string, seen_ids:dynamic, page_rows:long);
{table}
| where ingestion_time() >= window_start and ingestion_time() < window_end
| extend _ticks = tolong(ingestion_time()), _id = tostring({id_column})
| where _ticks > after_ticks or (_ticks == after_ticks and strcmp(_id, after_id) > 0)
| where not(_id in (seen_ids))
| order by _ticks asc, _id asc
| take page_rows
| project _ticks, _id, _row = pack_all()"""
EXTENDED_COLUMNS = ("_ticks", "_id")
TICKS_AT_UNIX_EPOCH = 621_355_968_000_000_000  # .NET ticks (100 ns since 0001-01-01) at 1970-01-01


@dataclass(frozen=True)
class KustoRow:
    ticks: int  # Kusto's ingestion_time() in 100 ns ticks
    id: str  # "" when the row has none
    row: Any  # the row as Kusto holds it: usually a dict of its columns, but anything

    @property
    def ingested_at_ms(self) -> int:
        return (self.ticks - TICKS_AT_UNIX_EPOCH) // 10_000


def page_query(table: str, id_column: str) -> str:
    for name in (table, id_column):
        if not _IDENTIFIER.fullmatch(name):
            raise ValueError(f"{name!r} is not a plain Kusto identifier")
    return _PAGE_QUERY.format(table=table, id_column=id_column)


def kql_datetime(instant: datetime) -> str:
    return f"datetime({instant.isoformat().replace('+00:00', 'Z')})"


def kql_dynamic(values: Collection[str]) -> str:
    return f"dynamic({json.dumps(sorted(values))})"


def window_pages(
    kusto: KustoResource,
    query: str,
    window: PollWindow,
    overlap: timedelta,
    seen_ids: Collection[str],
    page_rows: int,
    request_id: str,
) -> Iterator[tuple[list[KustoRow], KustoAnswer]]:
    """Every visible row ingested in ``[window.start - overlap, window.end)`` whose id is not
    in ``seen_ids``, a page of at most ``page_rows`` at a time."""
    after_ticks, after_id, page = -1, "", 0
    fixed = {
        "window_start": kql_datetime(window.start - overlap),
        "window_end": kql_datetime(window.end),
        "seen_ids": kql_dynamic(seen_ids),
        "page_rows": str(page_rows),
    }
    while True:
        page += 1
        parameters = {**fixed, "after_ticks": str(after_ticks), "after_id": after_id}  # string parameters go as they are
        answer = kusto.query(query, parameters, f"{request_id};p{page}")
        rows = [_row(values, answer.columns) for values in answer.rows]
        yield rows, answer
        if len(rows) < page_rows:
            return
        if (rows[-1].ticks, rows[-1].id) <= (after_ticks, after_id):  # a page must move the cursor on
            raise KustoUnavailable(f"paging did not advance past {after_ticks}/{after_id!r}: Kusto ignored the cursor")
        after_ticks, after_id = rows[-1].ticks, rows[-1].id


def _row(values: Any, columns: Any) -> KustoRow:
    fields = dict(zip(columns, values))
    ticks, row_id, row = fields.get("_ticks"), fields.get("_id"), fields.get("_row")
    if isinstance(row, dict):
        row = {k: v for k, v in row.items() if k not in EXTENDED_COLUMNS}
    return KustoRow(int(ticks) if isinstance(ticks, int) else -1, row_id if isinstance(row_id, str) else "", row)
