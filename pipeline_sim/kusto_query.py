"""The little KQL the Kusto double understands, and the tables it reads: the poller's page query,
``<Table> | count``, the KQL literals its parameters arrive as, and Kusto's scalar conversions
(``tolong(datetime)``, ``tostring``). Anything else is a ``SemanticError``, answered the way Kusto
answers it (HTTP 400).

The page query, whitespace, line breaks and ``//`` comments free (``sort`` for ``order`` and
``limit`` for ``take`` allowed); the declared parameters may come in any order and carry defaults::

    declare query_parameters(window_start:datetime, window_end:datetime, after_ticks:long,
                             after_id:string, after_hash:string, seen_ids:dynamic, page_rows:long);
    <Table>
    | where ingestion_time() >= window_start and ingestion_time() < window_end
    | extend _row = pack_all()
    | extend _ticks = tolong(ingestion_time()), _id = tostring(<id column>), _h = hash_sha256(tostring(_row))
    | where _ticks > after_ticks or (_ticks == after_ticks and (strcmp(_id, after_id) > 0 or (_id == after_id and strcmp(_h, after_hash) > 0)))
    | where not(_id in (seen_ids))
    | order by _ticks asc, _id asc, _h asc
    | take page_rows
    | project _ticks, _id, _h, _row

Strings compare ordinally (by code point), as ``strcmp`` and ``order by`` do for ASCII ids.
"""

from __future__ import annotations

import hashlib
import json
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, Optional, Union

TICKS_PER_SECOND = 10_000_000
UNIX_EPOCH_TICKS = 621_355_968_000_000_000  # .NET ticks (100 ns since 0001-01-01) of 1970-01-01
PARAMETER_TYPES = {
    "window_start": "datetime",
    "window_end": "datetime",
    "after_ticks": "long",
    "after_id": "string",
    "after_hash": "string",
    "seen_ids": "dynamic",
    "page_rows": "long",
}
DEFAULTS: dict[str, Any] = {"after_ticks": -1, "after_id": "", "after_hash": "", "seen_ids": [], "page_rows": 10_000}
TYPE_ALIASES = {"date": "datetime", "int64": "long", "int": "long", "int32": "long"}
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*|\['[^']+'\]|\[\"[^\"]+\"\]"
_DATETIME = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?\s*(Z|[+-]\d{2}:?\d{2})?", re.I
)


class SemanticError(ValueError):
    """What Kusto calls a semantic error: answered with HTTP 400 and ``SemanticException``."""

    def __init__(self, message: str, code: str = "SEM0100"):
        super().__init__(f"Semantic error: {code}: {message}")


@dataclass(frozen=True)
class PageQuery:
    table: str
    id_column: str
    defaults: dict[str, Any]  # from the declaration's ``name:type = literal``


@dataclass(frozen=True)
class CountQuery:
    table: str


@dataclass(frozen=True)
class PageParameters:
    window_start: Optional[int]  # ticks; None (a null datetime) matches nothing
    window_end: Optional[int]
    after_ticks: int
    after_id: str
    after_hash: str
    seen_ids: frozenset[str]
    page_rows: int


PAGE_COLUMNS = [("_ticks", "long"), ("_id", "string"), ("_h", "string"), ("_row", "dynamic")]
Index = tuple[list[tuple[int, str, str]], list[tuple[float, str]]]  # sorted (ticks, id, hash) keys; (visible_at, row JSON)


@dataclass
class Table:
    """Rows as ingested, and per id column the index pages are read from: sorted by (ticks, id, hash)
    like the page query's ``order by``, each row's answer (``[_ticks, _id, _h, _row]``) as JSON
    already. The hash (of the row as stored) tells rows apart that share an
    ingestion time and an id (rows without one, say), so pages never lose them."""

    rows: list[tuple[int, float, str]] = field(default_factory=list)  # (ticks, visible_at, row's JSON), as ingested
    indexes: dict[str, Index] = field(default_factory=dict)  # by id column, built on its first query

    def add(self, ticks: int, visible_at: float, rows: list[str]) -> None:
        """One extent: ``rows`` (JSON objects' text) sharing one ingestion_time."""
        extent = [(ticks, visible_at, row) for row in rows]
        self.rows.extend(extent)
        for column, index in self.indexes.items():
            _merge(index, extent, column)

    def expire(self, cutoff: int) -> None:
        """Retention: drop the rows ingested before ``cutoff`` (ticks)."""
        self.rows = [row for row in self.rows if row[0] >= cutoff]
        for keys, entries in self.indexes.values():
            del entries[: bisect_left(keys, (cutoff, "", ""))]
            del keys[: len(keys) - len(entries)]

    def count(self, now: float) -> int:
        return sum(1 for _, visible_at, _ in self.rows if visible_at <= now)

    def page(self, query: PageQuery, page: PageParameters, now: float) -> list[str]:
        """The rows visible at ``now`` (monotonic) that the page query returns, as JSON arrays."""
        if page.window_start is None or page.window_end is None or page.page_rows <= 0:
            return []
        if query.id_column not in self.indexes:
            self.indexes[query.id_column] = ([], [])
            _merge(self.indexes[query.id_column], self.rows, query.id_column)
        keys, entries = self.indexes[query.id_column]
        after = (page.after_ticks, page.after_id, page.after_hash)
        start = max(bisect_left(keys, (page.window_start, "", "")), bisect_right(keys, after))
        rows: list[str] = []
        for i in range(start, len(keys)):
            if keys[i][0] >= page.window_end or len(rows) >= page.page_rows:
                break
            if entries[i][0] <= now and keys[i][1] not in page.seen_ids:
                rows.append(entries[i][1])
        return rows


def _merge(index: Index, batch: list[tuple[int, float, str]], column: str) -> None:
    keys, entries = index
    new = []
    for ticks, visible_at, text in batch:
        row = json.loads(text)
        id_ = tostring(row.get(column))
        hash_ = hashlib.sha256(tostring(row).encode("utf-8", "surrogatepass")).hexdigest()
        new.append(((ticks, id_, hash_), (visible_at, json.dumps([ticks, id_, hash_, row], default=str))))
    new.sort(key=itemgetter(0))
    if new and keys and new[0][0] < keys[-1]:  # an extent older than the newest: merge
        new = sorted([*zip(keys, entries), *new], key=itemgetter(0))
        keys.clear()
        entries.clear()
    keys.extend(key for key, _ in new)
    entries.extend(entry for _, entry in new)


def _normalized(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"\s*([()\[\],|;:<>=!])\s*", r"\1", re.sub(r"\s+", " ", text.strip())).rstrip(";")


_BODY = _normalized("""
    {table}
    | where ingestion_time() >= window_start and ingestion_time() < window_end
    | extend _row = pack_all()
    | extend _ticks = tolong(ingestion_time()), _id = tostring({id}), _h = hash_sha256(tostring(_row))
    | where _ticks > after_ticks or (_ticks == after_ticks and (strcmp(_id, after_id) > 0 or (_id == after_id and strcmp(_h, after_hash) > 0)))
    | where not(_id in (seen_ids))
    | order by _ticks asc, _id asc, _h asc
    | take page_rows
    | project _ticks, _id, _h, _row
""")
_PAGE = re.compile(
    re.escape(_BODY)
    .replace(re.escape("{table}"), f"(?P<table>{_IDENT})")
    .replace(re.escape("{id}"), f"(?P<id>{_IDENT})")
    .replace("order\\ by", "(?:order|sort)\\ by")
    .replace("take", "(?:take|limit)")
)
_COUNT = re.compile(f"(?P<table>{_IDENT})\\|count")


def _name(ident: str) -> str:
    return ident[2:-2] if ident.startswith("[") else ident


def _split_top_level(text: str) -> list[str]:
    parts, depth, start, quote = [], 0, 0, ""
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote and text[i - 1] != "\\" else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def parse_query(csl: str) -> Union[PageQuery, CountQuery]:
    text = _normalized(csl)
    declared: dict[str, Any] = {}
    if text.startswith("declare query_parameters("):
        depth, end = 0, len(text)
        for i, char in enumerate(text):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if char == ")" and depth == 0:
                end = i
                break
        if text[end + 1 : end + 2] != ";":
            raise SemanticError("'declare query_parameters' must end with ';'", "SYN0002")
        for item in _split_top_level(text[len("declare query_parameters(") : end]):
            name, _, rest = item.partition(":")
            kusto_type, _, default = rest.partition("=")
            kusto_type = TYPE_ALIASES.get(kusto_type.strip(), kusto_type.strip())
            if PARAMETER_TYPES.get(name.strip()) not in (None, kusto_type):
                raise SemanticError(f"query parameter '{name.strip()}' must be declared {PARAMETER_TYPES[name.strip()]}")
            declared[name.strip()] = parse_literal(default, kusto_type) if default else DEFAULTS.get(name.strip())
        text = text[end + 2 :]
    if page := _PAGE.fullmatch(text):
        if missing := set(PARAMETER_TYPES) - set(declared):
            raise SemanticError(f"Failed to resolve scalar expression named '{sorted(missing)[0]}'")
        return PageQuery(_name(page["table"]), _name(page["id"]), declared)
    if count := _COUNT.fullmatch(text):
        return CountQuery(_name(count["table"]))
    raise SemanticError("the Kusto double understands only the poller's page query and '<Table> | count'")


def page_parameters(query: PageQuery, given: dict[str, Any]) -> PageParameters:
    """Bind ``properties.Parameters`` (KQL literal strings) over the declaration's defaults."""
    values = dict(query.defaults)
    for name, kusto_type in PARAMETER_TYPES.items():
        if name in given:
            value = given[name]
            values[name] = parse_literal(value if isinstance(value, str) else json.dumps(value), kusto_type)
    for name in ("after_ticks", "after_id", "after_hash", "page_rows"):
        if values[name] is None:
            values[name] = DEFAULTS[name]
    seen = values["seen_ids"]
    seen = seen if isinstance(seen, list) else [] if seen is None else [seen]
    return PageParameters(
        values["window_start"],
        values["window_end"],
        values["after_ticks"],
        values["after_id"],
        values["after_hash"],
        frozenset(tostring(s) for s in seen),
        values["page_rows"],
    )


def parse_literal(text: str, kusto_type: str) -> Any:
    """A parameter's value: for ``string`` the text as sent (Kusto.Data's string overload sends the
    value itself, not a literal); else a KQL literal: ``datetime(...)`` (ticks), ``long(42)``/``42``,
    ``dynamic([...])``; ``type(null)`` is None."""
    if kusto_type == "string":
        return text
    text = text.strip()
    wrapped = re.fullmatch(r"(\w+)\s*\((.*)\)", text, re.S)
    if wrapped and TYPE_ALIASES.get(wrapped[1], wrapped[1]) == kusto_type:
        text = wrapped[2].strip()
    if text == "null":
        return None
    try:
        if kusto_type == "datetime":
            return ticks_from_iso(text)
        if kusto_type == "long":
            return int(text)
        if kusto_type == "dynamic":
            return _dynamic(text)
    except ValueError:
        pass
    raise SemanticError(f"'{text}' is not a {kusto_type} literal", "SEM0002")


def parse_string(text: str) -> str:
    """A KQL string literal (``"..."``, ``'...'`` with escapes, ``@"..."`` verbatim, ``h``-obfuscated);
    anything else is taken as the raw value."""
    body = text[1:] if text[:1] in "hH" and text[1:2] in "'\"@" else text
    if body[:1] == "@" and len(body) >= 3 and body[1] == body[-1] and body[1] in "'\"":
        return body[2:-1].replace(body[1] * 2, body[1])
    if len(body) >= 2 and body[0] == body[-1] and body[0] in "'\"":
        return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", _unescape, body[1:-1], flags=re.S)
    return text


def _unescape(match: re.Match[str]) -> str:
    escape = match[1]
    return chr(int(escape[1:], 16)) if len(escape) == 5 else {"n": "\n", "t": "\t", "r": "\r", "0": "\0"}.get(escape, escape)


def _dynamic(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:  # KQL allows 'single-quoted' strings inside dynamic literals
        return json.loads(re.sub(r"'(?:[^'\\]|\\.)*'", lambda m: json.dumps(parse_string(m[0])), text))


def ticks_from_iso(text: str) -> int:
    """Ticks of an ISO 8601 datetime (naive is UTC), to Kusto's 100 ns: ``2026-12-05T10:00:00.1234567Z``."""
    match = _DATETIME.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a datetime: {text!r}")
    year, month, day, hour, minute, second = (int(g or 0) for g in match.groups()[:6])
    ticks = ticks_from_datetime(datetime(year, month, day, hour, minute, second)) + int((match[7] or "").ljust(7, "0")[:7])
    if match[8] and match[8].upper() != "Z":
        sign, hours, minutes = match[8][0], int(match[8][1:3]), int(match[8][-2:])
        ticks -= (1 if sign == "+" else -1) * (hours * 60 + minutes) * 60 * TICKS_PER_SECOND
    return ticks


def ticks_from_datetime(value: datetime) -> int:
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    delta = value.replace(tzinfo=None) - datetime(1, 1, 1)
    return (delta.days * 86_400 + delta.seconds) * TICKS_PER_SECOND + delta.microseconds * 10


def iso_from_ticks(ticks: int) -> str:
    """Kusto's datetime text: ``2026-12-05T10:00:00.1234567Z``."""
    moment = datetime(1, 1, 1) + timedelta(microseconds=ticks // 10)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ticks % TICKS_PER_SECOND:07d}Z"


def timespan_seconds(value: Any) -> Optional[float]:
    """A timespan option (``servertimeout``) in seconds: Kusto's ``[d.]hh:mm:ss[.f]``, Python's
    ``str(timedelta)`` (what the client sends), or a number of seconds; None if unreadable."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = re.fullmatch(r"(?:(\d+)(?:\.| days?, ))?(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", str(value).strip())
    if not match:
        return None
    return ((int(match[1] or 0) * 24 + int(match[2])) * 60 + int(match[3])) * 60 + float(match[4])


def tostring(value: Any) -> str:
    """Kusto's ``tostring``: null (or a missing column) is "", dynamic values are compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
