"""Reading one poll window of a Kusto table, page by page.

The query is parameterised (``declare query_parameters``), so no value is ever spliced into
KQL text. Pages are ordered by ``(ingestion ticks, id, row hash)`` and each page resumes strictly
after the last row of the previous one: a batch ingested together shares one ingestion time,
and rows without an id share an id too, so paging by anything less would lose rows at a page
boundary (only rows identical to the last byte share all three: duplicates). Ids the pipeline already holds are excluded in
Kusto (``not(_id in (seen_ids))``, the seed's anti-join). Each row comes back whole as one
dynamic value (``pack_all()``, taken before the paging columns are added, so a table's own
``_id`` or ``_ticks`` column travels untouched), so a row of any shape reaches the poller.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pipeline_defs.lib.kusto.resource import KustoAnswer, KustoResource, KustoResultTooLarge, KustoUnavailable
from pipeline_defs.lib.kusto.windows import PollWindow

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_PAGE_QUERY = """declare query_parameters(window_start:datetime, window_end:datetime, after_ticks:long, after_id:string, after_hash:string, seen_ids:dynamic, page_rows:long);
{table}
| where ingestion_time() >= window_start and ingestion_time() < window_end
| extend _row = pack_all()
| extend _ticks = tolong(ingestion_time()), _id = tostring({id_column}), _h = hash_sha256(tostring(_row))
| where _ticks > after_ticks or (_ticks == after_ticks and (strcmp(_id, after_id) > 0 or (_id == after_id and strcmp(_h, after_hash) > 0)))
| where not(_id in (seen_ids))
| order by _ticks asc, _id asc, _h asc
| take page_rows
| project _ticks, _id, _h, _row"""
TICKS_AT_UNIX_EPOCH = 621_355_968_000_000_000  # .NET ticks (100 ns since 0001-01-01) at 1970-01-01


@dataclass(frozen=True)
class KustoRow:
    ticks: int  # Kusto's ingestion_time() in 100 ns ticks
    id: str  # "" when the row has none
    hash: str  # of the whole row: tells apart rows that share an ingestion time and an id
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
    in ``seen_ids``, a page of at most ``page_rows`` at a time; a page larger than Kusto returns
    whole (its result set limits: 64 MB, 500,000 records) is asked for again, half as long."""
    after: tuple[int, str, str] = (-1, "", "")
    page = 0
    fixed = {
        "window_start": kql_datetime(window.start - overlap),
        "window_end": kql_datetime(window.end),
        "seen_ids": kql_dynamic(seen_ids),
    }
    while True:
        page += 1
        # string parameters go as they are (Kusto.Data's string overload), not as KQL literals
        parameters = {
            **fixed,
            "page_rows": str(page_rows),
            "after_ticks": str(after[0]),
            "after_id": after[1],
            "after_hash": after[2],
        }
        try:
            answer = kusto.query(query, parameters, f"{request_id};p{page}")
        except KustoResultTooLarge:
            if page_rows == 1:
                raise
            page_rows //= 2
            continue
        rows = [_row(values, answer.columns) for values in answer.rows]
        yield rows, answer
        if len(rows) < page_rows:
            return
        last = (rows[-1].ticks, rows[-1].id, rows[-1].hash)
        if last <= after:  # a page must move the cursor on
            raise KustoUnavailable(f"paging did not advance past {after}: Kusto ignored the cursor")
        after = last


def _row(values: Any, columns: Any) -> KustoRow:
    fields = dict(zip(columns, values))
    ticks, row_id, hash_, row = fields.get("_ticks"), fields.get("_id"), fields.get("_h"), fields.get("_row")
    return KustoRow(int(ticks) if isinstance(ticks, int) else -1, _text(row_id), _text(hash_), row)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
