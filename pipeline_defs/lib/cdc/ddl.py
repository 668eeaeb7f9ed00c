"""The sink's SQL: the replicated tables' and the bookkeeping tables' DDL, additive schema
changes, and the statements ``sink.apply`` runs on a batch (``Statements``).

Every identifier is quoted with ``psycopg.sql.Identifier`` (Cassandra names are
case-sensitive and may be reserved words in PostgreSQL). Everything is ``IF NOT EXISTS`` so
several writers, and a retried step, can run it at any time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Optional

import psycopg
from psycopg import sql

from pipeline_defs.lib.cdc.model import NewColumn, TableSpec
from pipeline_defs.lib.cdc.types import pg_type

WRITETIME = "_cdc_writetime"  # µs, the writetime of the newest mutation applied to the row
UPDATED_AT = "_cdc_updated_at"  # when the sink last wrote the row
EXPIRES_AT = "_cdc_expires_at"  # when the row's TTL'd cells expire (the latest a mutation set)
DELETED = "_cdc_deleted"  # soft delete mode: the row was deleted at _cdc_writetime
SET_MASK = "_cdc_set"  # which user columns (then _cdc_expires_at) the last applied mutation set

STAGE = sql.SQL("pg_temp._cdc_stage")
# What a type string may look like before it is spliced into DDL: "text", "numeric(10, 2)",
# "double precision", "timestamp with time zone", "text[]", "cdc.my_type".
_SAFE_TYPE = re.compile(r"^[A-Za-z_][A-Za-z0-9_ .]*(\(\s*\d+\s*(,\s*\d+\s*)?\))?(\s*\[\])*$")

# A source coordinate: (topic, partition, offset).
Source = tuple[str, int, int]

_BOOKKEEPING = [
    """CREATE TABLE IF NOT EXISTS {schema}."_cdc_offsets" (
        consumer_group text NOT NULL, topic text NOT NULL, "partition" integer NOT NULL,
        next_offset bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (consumer_group, topic, "partition"))""",
    """CREATE TABLE IF NOT EXISTS {schema}."cdc_staleness_audit" (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, table_name text NOT NULL, key jsonb NOT NULL,
        event_writetime bigint NOT NULL, row_writetime bigint, position text, topic text NOT NULL,
        "partition" integer NOT NULL, "offset" bigint NOT NULL,
        reason text NOT NULL CHECK (reason IN ('older_than_row', 'older_than_threshold')),
        recorded_at timestamptz NOT NULL DEFAULT now())""",
    """CREATE TABLE IF NOT EXISTS {schema}."cdc_schema_changes" (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, table_name text NOT NULL, column_name text NOT NULL,
        pg_type text NOT NULL, change text NOT NULL CHECK (change IN ('add_column')),
        detected_at timestamptz NOT NULL DEFAULT now(), topic text, "partition" integer, "offset" bigint)""",
    """CREATE TABLE IF NOT EXISTS {schema}."_cdc_record_failures" (
        consumer_group text NOT NULL, topic text NOT NULL, "partition" integer NOT NULL, "offset" bigint NOT NULL,
        failures integer NOT NULL, last_error text NOT NULL, first_failed_at timestamptz NOT NULL DEFAULT now(),
        last_failed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (consumer_group, topic, "partition", "offset"))""",
    """CREATE TABLE IF NOT EXISTS {schema}."_cdc_range_tombstones" (
        table_name text NOT NULL, prefix jsonb NOT NULL, writetime bigint NOT NULL,
        PRIMARY KEY (table_name, prefix))""",
    """CREATE TABLE IF NOT EXISTS {schema}."_cdc_tombstones" (
        table_name text NOT NULL, key jsonb NOT NULL, writetime bigint NOT NULL,
        PRIMARY KEY (table_name, key))""",
]


def column_types(spec: TableSpec) -> list[tuple[str, str]]:
    """The declared columns and their PostgreSQL types, in declaration order."""
    return [(column.name, pg_type(column.cql_type, spec.udts)) for column in spec.columns]


def safe_type(pgt: str) -> sql.SQL:
    """A type name as SQL, refused unless it looks like one (new columns' types come from the wire)."""
    if not _SAFE_TYPE.match(pgt) or len(pgt) > 100:
        raise ValueError(f"not a PostgreSQL type name: {pgt[:100]!r}")
    return sql.SQL(pgt)


def table_ident(spec: TableSpec, schema: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(spec.pg_table))


def ensure_table(conn: psycopg.Connection, spec: TableSpec, schema: str = "cdc", soft_delete: bool = False) -> None:
    """Create the schema, the bookkeeping tables and ``spec``'s table when missing, in one
    transaction (concurrent creators of the same table are serialized by an advisory lock)."""
    missing_pk = [name for name in spec.primary_key if spec.column(name) is None]
    if missing_pk:
        raise ValueError(f"{spec.pg_table}: primary key columns {missing_pk} are not declared columns")
    columns = [
        sql.SQL("{} {}{}").format(sql.Identifier(name), safe_type(pgt), sql.SQL(" NOT NULL" if name in spec.primary_key else ""))
        for name, pgt in column_types(spec)
    ]
    hidden = [
        f"{WRITETIME} bigint NOT NULL",
        f"{UPDATED_AT} timestamptz NOT NULL DEFAULT now()",
        f"{EXPIRES_AT} timestamptz",
        f"{SET_MASK} boolean[]",
        *([f"{DELETED} boolean NOT NULL DEFAULT false"] if soft_delete else []),
    ]
    create = sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, {}, PRIMARY KEY ({}))").format(
        table_ident(spec, schema),
        sql.SQL(", ").join(columns),
        sql.SQL(", ".join(hidden)),
        sql.SQL(", ").join(map(sql.Identifier, spec.primary_key)),
    )
    with conn.transaction():
        # CREATE ... IF NOT EXISTS still races on the catalog's unique index: serialize it.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('pipeline_defs.cdc.ddl'))")
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        for statement in _BOOKKEEPING:
            conn.execute(sql.SQL(statement).format(schema=sql.Identifier(schema)))
        conn.execute(create)


def table_columns(conn: psycopg.Connection, spec: TableSpec, schema: str) -> dict[str, str]:
    """The table's columns as PostgreSQL has them now: name -> type."""
    rows = conn.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
           WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
        [sql.SQL("{}").format(table_ident(spec, schema)).as_string(conn)],
    ).fetchall()
    return {name: pgt for name, pgt in rows}


def applied_offsets(conn: psycopg.Connection, schema: str, group: str, topic: str) -> dict[int, int]:
    """Partition -> the next offset ``group`` has applied of ``topic`` (committed with the rows)."""
    query = sql.SQL('SELECT "partition", next_offset FROM {}."_cdc_offsets" WHERE consumer_group = %s AND topic = %s')
    return dict(conn.execute(query.format(sql.Identifier(schema)), [group, topic]).fetchall())


def add_columns(
    conn: psycopg.Connection,
    spec: TableSpec,
    new_columns: Sequence[NewColumn],
    *,
    schema: str = "cdc",
    source: Optional[Source] = None,
) -> list[NewColumn]:
    """Add the columns ``spec``'s table lacks (additive changes only) and log each in
    ``cdc_schema_changes``; returns those added. Runs inside the caller's transaction if one is
    open (``apply`` does), else in its own."""
    with conn.transaction():
        existing = table_columns(conn, spec, schema)
        added: list[NewColumn] = []
        for column in new_columns:
            if column.name in existing or any(column.name == a.name for a in added):
                continue
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                    table_ident(spec, schema), sql.Identifier(column.name), safe_type(column.pg_type)
                )
            )
            conn.execute(
                sql.SQL(
                    """INSERT INTO {}."cdc_schema_changes" (table_name, column_name, pg_type, change, topic, "partition", "offset")
                       VALUES (%s, %s, %s, 'add_column', %s, %s, %s)"""
                ).format(sql.Identifier(schema)),
                [spec.pg_table, column.name, column.pg_type, *(source or (None, None, None))],
            )
            added.append(column)
        return added


@dataclass(frozen=True)
class Statements:
    """The statements of one ``apply`` on one table: the stage (a temporary table holding one
    collapsed mutation per key, with a mask of the columns it set), the upsert guarded by
    writetime, the hard delete with its tombstones, the offsets and the audit."""

    spec: TableSpec
    schema: str
    data: tuple[tuple[str, str], ...]  # non-key columns staged: (name, pg type)
    soft_delete: bool

    @cached_property
    def keys(self) -> tuple[tuple[str, str], ...]:
        types = dict(column_types(self.spec))
        return tuple((name, types[name]) for name in self.spec.primary_key)

    def _ids(self, names: Sequence[str], prefix: str = "") -> sql.Composable:
        qualify = (lambda n: sql.SQL(prefix + ".") + sql.Identifier(n)) if prefix else sql.Identifier
        return sql.SQL(", ").join(qualify(n) for n in names)

    def _key_match(self, left: str, right: str) -> sql.Composable:
        return sql.SQL(" AND ").join(
            sql.SQL("{}.{} = {}.{}").format(sql.Identifier(left), sql.Identifier(k), sql.Identifier(right), sql.Identifier(k))
            for k in self.spec.primary_key
        )

    def key_json(self, alias: str, columns: Sequence[str] = ()) -> sql.Composable:
        """The key (or a prefix of it) as the tombstones hold it: a jsonb object built by
        PostgreSQL (canonical). ``alias`` "%s" takes the values as parameters, cast to the key types."""
        types = dict(self.keys)

        def value(k: str) -> sql.Composable:
            if alias == "%s":
                return sql.SQL("%s::{}").format(safe_type(types[k]))
            return sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(k))

        pairs = [sql.SQL("{}, {}").format(sql.Literal(k), value(k)) for k in columns or self.spec.primary_key]
        return sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(pairs))

    @property
    def table(self) -> sql.Composed:
        return table_ident(self.spec, self.schema)

    def bookkeeping(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    @property
    def stage_columns(self) -> list[tuple[str, str]]:
        hidden = [
            (EXPIRES_AT, "timestamptz"),
            ("_set", "boolean[]"),
            (WRITETIME, "bigint"),
            ("_delete", "boolean"),
            ("_i", "integer"),
        ]
        return [*self.keys, *self.data, *hidden]

    def create_stage(self) -> sql.Composed:
        columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), safe_type(t)) for n, t in self.stage_columns)
        return sql.SQL("CREATE TEMP TABLE _cdc_stage ({}) ON COMMIT DROP").format(columns)

    def copy_stage(self) -> sql.Composed:
        return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(STAGE, self._ids([n for n, _ in self.stage_columns]))

    def prefetch(self) -> sql.Composed:
        """Each staged key's row writetime and the newest tombstone over it: its own (hard delete
        mode) or a partition/range delete of a key prefix (any mode), so a late older write under
        a deleted key or prefix stays out."""
        tombs = [] if self.soft_delete else [sql.SQL("tb.writetime")]
        join: list[sql.Composable] = []
        if not self.soft_delete:
            join.append(
                sql.SQL("LEFT JOIN {} tb ON tb.table_name = %(table)s AND tb.key = {}").format(
                    self.bookkeeping("_cdc_tombstones"), self.key_json("s")
                )
            )
        prefixes = [self.key_json("s", self.spec.primary_key[:n]) for n in range(1, len(self.spec.primary_key))]
        if prefixes:
            tombs.append(sql.SQL("rt.writetime"))
            join.append(
                sql.SQL(
                    "LEFT JOIN LATERAL (SELECT max(r.writetime) AS writetime FROM {} r "
                    "WHERE r.table_name = %(table)s AND r.prefix IN ({})) rt ON true"
                ).format(self.bookkeeping("_cdc_range_tombstones"), sql.SQL(", ").join(prefixes))
            )
        tomb = sql.SQL("GREATEST({})").format(sql.SQL(", ").join(tombs)) if tombs else sql.SQL("NULL::bigint")
        return sql.SQL(
            "SELECT s._i, t.{wt}, {tomb} FROM {stage} s LEFT JOIN {table} t ON {match} {join} "
            "WHERE (t.{wt} IS NOT NULL OR {tomb} IS NOT NULL) AND (%(only)s::int[] IS NULL OR s._i = ANY(%(only)s::int[]))"
        ).format(
            wt=sql.Identifier(WRITETIME),
            tomb=tomb,
            stage=STAGE,
            table=self.table,
            match=self._key_match("t", "s"),
            join=sql.SQL(" ").join(join),
        )

    def upsert(self) -> sql.Composed:
        """One INSERT for every staged upsert (and soft delete): an unset column keeps its value;
        the row changes only if the mutation is newer, checked by PostgreSQL on the row it locked."""
        data = [n for n, _ in self.data]
        inserted = [*self.spec.primary_key, *data, EXPIRES_AT, SET_MASK, WRITETIME, UPDATED_AT]
        selected: list[sql.Composable] = [
            sql.SQL("s.") + sql.Identifier(n) for n in [*self.spec.primary_key, *data, EXPIRES_AT, "_set", WRITETIME]
        ]
        selected.append(sql.SQL("now()"))
        # an upsert on a soft-deleted row revives it with only its own cells, as after a delete
        revive = (
            sql.SQL(" OR (t.{d} AND NOT excluded.{d})").format(d=sql.Identifier(DELETED)) if self.soft_delete else sql.SQL("")
        )
        masked: list[sql.Composable] = [
            sql.SQL("{c} = CASE WHEN excluded.{m}[{i}]{r} THEN excluded.{c} ELSE t.{c} END").format(
                c=sql.Identifier(name), m=sql.Identifier(SET_MASK), i=sql.Literal(i), r=revive
            )
            for i, name in enumerate([*data, EXPIRES_AT], start=1)
        ]
        masked += [sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(n)) for n in (SET_MASK, WRITETIME, UPDATED_AT)]
        newer = sql.SQL("t.{wt} < excluded.{wt}").format(wt=sql.Identifier(WRITETIME))
        if self.soft_delete:
            inserted.append(DELETED)
            selected.append(sql.SQL("s._delete"))
            masked.append(sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(DELETED)))
            # a delete wins a tie, as in Cassandra
            newer = sql.SQL("({} OR (t.{wt} = excluded.{wt} AND excluded.{d}))").format(
                newer, wt=sql.Identifier(WRITETIME), d=sql.Identifier(DELETED)
            )
            where: sql.Composable = sql.SQL("TRUE")
        else:
            where = sql.SQL(
                "NOT s._delete AND NOT EXISTS (SELECT 1 FROM {} tb WHERE tb.table_name = %(table)s AND tb.key = {} AND tb.writetime >= s.{})"
            ).format(self.bookkeeping("_cdc_tombstones"), self.key_json("s"), sql.Identifier(WRITETIME))
        return sql.SQL(
            "WITH up AS (INSERT INTO {table} AS t ({inserted}) SELECT {selected} FROM {stage} s WHERE {where} ORDER BY {order} "
            "ON CONFLICT ({pk}) DO UPDATE SET {masked} WHERE {newer} RETURNING {returned}, (t.xmax = 0) AS inserted) "
            "SELECT s._i, up.inserted FROM up JOIN {stage} s ON {match}"
        ).format(
            table=self.table,
            inserted=self._ids(inserted),
            selected=sql.SQL(", ").join(selected),
            stage=STAGE,
            where=where,
            order=self._ids(self.spec.primary_key, "s"),
            pk=self._ids(self.spec.primary_key),
            masked=sql.SQL(", ").join(masked),
            newer=newer,
            returned=self._ids(self.spec.primary_key, "t"),
            match=self._key_match("up", "s"),
        )

    def hard_delete(self) -> sql.Composed:
        """Delete the rows no newer than the delete, and keep a tombstone so a late, older
        insert cannot bring the row back."""
        return sql.SQL(
            "WITH gone AS (DELETE FROM {table} AS t USING {stage} s WHERE s._delete AND {match} AND t.{wt} <= s.{wt} RETURNING s._i), "
            "tomb AS (INSERT INTO {tombs} AS tb (table_name, key, writetime) SELECT %(table)s, {key}, s.{wt} FROM {stage} s "
            "WHERE s._delete ORDER BY 2 ON CONFLICT (table_name, key) DO UPDATE SET writetime = GREATEST(tb.writetime, excluded.writetime)) "
            "SELECT _i FROM gone"
        ).format(
            table=self.table,
            stage=STAGE,
            match=self._key_match("t", "s"),
            wt=sql.Identifier(WRITETIME),
            tombs=self.bookkeeping("_cdc_tombstones"),
            key=self.key_json("s"),
        )

    def remember_range(self, prefix: Sequence[str]) -> sql.Composed:
        """The partition/range tombstone itself, so later older writes under the prefix stay out."""
        return sql.SQL(
            "INSERT INTO {} AS r (table_name, prefix, writetime) VALUES (%s, {}, %s) "
            "ON CONFLICT (table_name, prefix) DO UPDATE SET writetime = GREATEST(r.writetime, excluded.writetime)"
        ).format(self.bookkeeping("_cdc_range_tombstones"), self.key_json("%s", prefix))

    def range_delete(self, prefix: Sequence[str]) -> sql.Composed:
        """A partition or range tombstone: every row under the key prefix, no newer than it."""
        match = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in prefix)
        if self.soft_delete:
            return sql.SQL("UPDATE {t} SET {d} = true, {wt} = %s, {u} = now() WHERE {m} AND {wt} <= %s").format(
                t=self.table, d=sql.Identifier(DELETED), wt=sql.Identifier(WRITETIME), u=sql.Identifier(UPDATED_AT), m=match
            )
        return sql.SQL("DELETE FROM {t} WHERE {m} AND {wt} <= %s").format(t=self.table, m=match, wt=sql.Identifier(WRITETIME))

    def lock_offsets(self) -> tuple[sql.Composed, sql.Composed]:
        """Create the group's offset rows if new, then lock them (in one order: no deadlock)."""
        offsets = self.bookkeeping("_cdc_offsets")
        create = sql.SQL(
            'INSERT INTO {} (consumer_group, topic, "partition", next_offset) SELECT %(group)s, u.topic, u.p, 0 '
            "FROM unnest(%(topics)s::text[], %(partitions)s::int[]) AS u(topic, p) ORDER BY 2, 3 ON CONFLICT DO NOTHING"
        ).format(offsets)
        lock = sql.SQL(
            'SELECT o.topic, o."partition", o.next_offset FROM {} o JOIN unnest(%(topics)s::text[], %(partitions)s::int[]) AS u(topic, p) '
            'ON o.topic = u.topic AND o."partition" = u.p WHERE o.consumer_group = %(group)s ORDER BY 1, 2 FOR UPDATE OF o'
        ).format(offsets)
        return create, lock

    def save_offsets(self) -> sql.Composed:
        return sql.SQL(
            "UPDATE {} o SET next_offset = GREATEST(o.next_offset, u.n), updated_at = now() "
            "FROM unnest(%(topics)s::text[], %(partitions)s::int[], %(next)s::bigint[]) AS u(topic, p, n) "
            'WHERE o.consumer_group = %(group)s AND o.topic = u.topic AND o."partition" = u.p'
        ).format(self.bookkeeping("_cdc_offsets"))

    def copy_audit(self) -> sql.Composed:
        return sql.SQL(
            'COPY {} (table_name, key, event_writetime, row_writetime, position, topic, "partition", "offset", reason) FROM STDIN'
        ).format(self.bookkeeping("cdc_staleness_audit"))
