"""The CDC sink on the test stack's real PostgreSQL: values reach their columns, newest writetime
wins, offsets make re-runs write nothing twice, deletes stay deleted, concurrent and killed
writers lose and double nothing, and an unreachable server is infrastructure (retry), not data."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from pipeline_defs.lib.cdc.ddl import add_columns
from pipeline_defs.lib.cdc.model import Cell, ChangeEvent, NewColumn, Op
from pipeline_defs.lib.cdc.sink import OLDER_THAN_ROW, OLDER_THAN_THRESHOLD
from pipeline_defs.lib.postgres.resource import PostgresConnection, PostgresResource, PostgresUnavailable
from pipeline_defs_tests.support.cdc_sink import FULL, SPEC, TOPIC, Db, at, event, key
from pipeline_defs_tests.support.stack import LocalStack


def test_insert_update_delete_reach_postgres_field_by_field(db: Db) -> None:
    result = db.apply(at([event(Op.CREATE, key(1), 100, FULL)]))
    assert (result.inserted, result.updated, result.applied) == (1, 0, 1)
    names = list(FULL)
    (row,) = db.rows(*names)
    stored = dict(zip(names, row))
    for name, value in FULL.items():
        expected = value.obj if isinstance(value, Jsonb) else value
        if name == "ratio":
            assert stored[name] != stored[name]  # NaN
        else:
            assert stored[name] == expected, name

    result = db.apply(at([event(Op.UPDATE, key(1), 200, {"name": "Zed", "ratio": float("inf"), "tags": None})], start=1))
    assert (result.inserted, result.updated) == (0, 1)
    assert db.rows("name", "ratio", "tags", "big", "_cdc_writetime") == [("Zed", float("inf"), None, 2**62, 200)]

    result = db.apply(at([event(Op.DELETE, key(1), 300)], start=2))
    assert result.deleted == 1 and db.rows() == []


def test_a_partial_update_keeps_the_columns_it_did_not_set(db: Db) -> None:
    db.apply(at([event(Op.CREATE, key(1), 100, {"name": "a", "big": 1, "flag": False})]))
    db.apply(at([event(Op.UPDATE, key(1), 110, {"big": 2})], start=1))
    assert db.rows("name", "big", "flag") == [("a", 2, False)]


def test_an_older_event_after_a_newer_one_is_audited_not_applied(db: Db) -> None:
    db.apply(at([event(Op.CREATE, key(1), 500, {"name": "new"})]))
    result = db.apply(at([event(Op.UPDATE, key(1), 400, {"name": "old"})], start=1))
    assert (result.stale, result.applied, result.updated) == (1, 0, 0)
    assert db.rows() == [(uuid.UUID(int=1), 0, "new", 500)]
    (audit,) = result.audit
    assert (audit.reason, audit.event_writetime, audit.row_writetime, audit.offset) == (OLDER_THAN_ROW, 400, 500, 1)
    assert audit.key == {"id": str(uuid.UUID(int=1)), "seq": 0}
    stored = db.one('SELECT reason, event_writetime, row_writetime, key, position, "offset" FROM {s}.cdc_staleness_audit')
    assert stored == [(OLDER_THAN_ROW, 400, 500, audit.key, "CommitLog-7-1.log:400", 1)]


def test_within_a_batch_only_the_events_newer_than_the_row_count(db: Db) -> None:
    db.apply(at([event(Op.CREATE, key(1), 100, {"name": "row", "big": 1})]))
    batch = [event(Op.UPDATE, key(1), 50, {"name": "older"}), event(Op.UPDATE, key(1), 150, {"big": 2})]
    result = db.apply(at(batch, start=1))
    assert (result.stale, result.applied) == (1, 1)
    assert db.rows("name", "big", "_cdc_writetime") == [("row", 2, 150)]
    # in one batch, events collapse in writetime order whatever their offsets
    result = db.apply(
        at([event(Op.UPDATE, key(1), 300, {"big": 3}), event(Op.UPDATE, key(1), 200, {"big": 99, "name": "b"})], start=3)
    )
    assert db.rows("name", "big", "_cdc_writetime") == [("b", 3, 300)]


def test_reapplying_the_same_offsets_changes_nothing(db: Db) -> None:
    batch = at([event(Op.CREATE, key(n), 100 + n, {"big": n}) for n in range(10)])
    assert db.apply(batch).inserted == 10
    before = db.rows("id", "big", "_cdc_writetime", "_cdc_updated_at")
    again = db.apply(batch)
    assert (again.already_applied, again.applied, again.inserted, again.updated) == (10, 0, 0, 0)
    assert db.rows("id", "big", "_cdc_writetime", "_cdc_updated_at") == before
    assert db.one('SELECT next_offset FROM {s}."_cdc_offsets"') == [(10,)]


def test_overlapping_offset_ranges_apply_each_event_once(db: Db) -> None:
    events = [event(Op.UPDATE, key(1), 100 + n, {"big": n}) for n in range(15)]
    db.apply(at(events[:10]))
    result = db.apply(at(events[5:], start=5))
    assert (result.already_applied, result.applied, result.stale) == (5, 5, 0)
    assert db.rows("big", "_cdc_writetime") == [(14, 114)]
    assert db.one('SELECT next_offset FROM {s}."_cdc_offsets"') == [(15,)]


def test_a_hard_delete_is_not_undone_by_a_late_older_insert(db: Db) -> None:
    db.apply(at([event(Op.CREATE, key(1), 100, {"name": "a"})]))
    assert db.apply(at([event(Op.DELETE, key(1), 200)], start=1)).deleted == 1
    late = db.apply(at([event(Op.CREATE, key(1), 150, {"name": "late"})], start=2))
    assert (late.stale, late.inserted) == (1, 0) and late.audit[0].row_writetime == 200
    assert db.rows() == []
    # a delete of a row never seen still guards against its older inserts
    db.apply(at([event(Op.DELETE, key(2), 500)], start=3))
    assert db.apply(at([event(Op.CREATE, key(2), 400, {"name": "x"})], start=4)).stale == 1
    # a newer insert revives the row, with only what it set
    revived = db.apply(at([event(Op.CREATE, key(1), 250, {"big": 7})], start=5))
    assert revived.inserted == 1 and db.rows("name", "big") == [(None, 7)]


def test_delete_then_insert_in_one_batch_revives_with_only_the_new_cells(db: Db) -> None:
    db.apply(at([event(Op.CREATE, key(1), 100, {"name": "a", "big": 1})]))
    db.apply(at([event(Op.DELETE, key(1), 200), event(Op.UPDATE, key(1), 300, {"big": 2})], start=1))
    assert db.rows("name", "big", "_cdc_writetime") == [(None, 2, 300)]


def test_soft_delete_marks_the_row_and_a_newer_insert_revives_it(soft_db: Db) -> None:
    db = soft_db
    db.apply(at([event(Op.CREATE, key(1), 100, {"name": "a", "big": 1})]))
    assert db.apply(at([event(Op.DELETE, key(1), 200)], start=1)).deleted == 1
    assert db.rows("name", "big", "_cdc_deleted", "_cdc_writetime") == [("a", 1, True, 200)]
    assert db.apply(at([event(Op.UPDATE, key(1), 150, {"name": "late"})], start=2)).stale == 1
    db.apply(at([event(Op.UPDATE, key(1), 250, {"name": "back"})], start=3))
    assert db.rows("name", "big", "_cdc_deleted") == [("back", None, False)]


def test_ttl_cells_set_the_row_expiry(db: Db) -> None:
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    ttl = ChangeEvent(Op.CREATE, SPEC, key(1), {"name": Cell("t", expires_at_us=int(expires.timestamp() * 1e6))}, 100)
    db.apply(at([ttl]))
    db.apply(at([event(Op.UPDATE, key(1), 200, {"big": 1})], start=1))  # no TTL: the expiry stays
    assert db.rows("name", "big", "_cdc_expires_at") == [("t", 1, expires)]


def test_a_partition_delete_removes_the_rows_it_covers_and_no_newer_one(db: Db) -> None:
    rows = [event(Op.CREATE, key(1, seq), 100, {"big": seq}) for seq in range(3)] + [event(Op.CREATE, key(2), 100)]
    db.apply(at(rows))
    partition_delete = event(Op.DELETE, {"id": uuid.UUID(int=1)}, 150, range_delete={"id": uuid.UUID(int=1)})
    result = db.apply(at([event(Op.UPDATE, key(1, 9), 200, {"big": 9}), partition_delete], start=4))
    assert result.deleted == 3 and result.applied == 2
    assert [(r[0].int, r[1]) for r in db.rows()] == [(1, 9), (2, 0)]


@pytest.mark.parametrize("mode", ["db", "soft_db"])
def test_a_late_older_write_under_a_deleted_partition_stays_out(mode: str, request: pytest.FixtureRequest) -> None:
    db: Db = request.getfixturevalue(mode)
    partition_delete = event(Op.DELETE, {"id": uuid.UUID(int=1)}, 150, range_delete={"id": uuid.UUID(int=1)})
    db.apply(at([partition_delete]))
    late = db.apply(at([event(Op.CREATE, key(1, 5), 140, {"big": 5}), event(Op.CREATE, key(1, 6), 160, {"big": 6})], start=1))
    assert (late.stale, late.inserted) == (1, 1)
    assert [(r[0].int, r[1]) for r in db.rows()] == [(1, 6)]
    assert db.one('SELECT "offset", reason, row_writetime FROM {s}."cdc_staleness_audit"') == [(1, OLDER_THAN_ROW, 150)]


def test_events_older_than_the_threshold_are_flagged_and_still_applied_if_newest(db: Db) -> None:
    now_us = 10 * 24 * 3600 * 1_000_000
    old, recent = now_us - 8 * 24 * 3600 * 1_000_000, now_us - 1_000_000
    week = 7 * 24 * 3600 * 1_000_000
    batch = at([event(Op.CREATE, key(1), old, {"name": "old"}), event(Op.CREATE, key(2), recent, {"name": "recent"})])
    result = db.apply(batch, stale_threshold_us=week, now_us=now_us)
    assert result.inserted == 2
    assert [(a.reason, a.key["id"]) for a in result.audit] == [(OLDER_THAN_THRESHOLD, str(uuid.UUID(int=1)))]
    assert db.one("SELECT reason FROM {s}.cdc_staleness_audit") == [(OLDER_THAN_THRESHOLD,)]
    backfill = db.apply(at([event(Op.UPDATE, key(1), old + 1, {"name": "older"})], start=2), stale_threshold_us=None)
    assert backfill.audit == [] and backfill.updated == 1


def test_an_additive_schema_change_adds_the_column_once_and_fills_it(db: Db) -> None:
    new = (NewColumn("region", "text", "EU"),)
    result = db.apply(at([event(Op.CREATE, key(1), 100, {"name": "a"}, new_columns=new)]))
    assert result.added_columns == ["region"] and result.inserted == 1
    result = db.apply(
        at([event(Op.UPDATE, key(2), 101, {"name": "b"}, new_columns=(NewColumn("region", "text", "US"),))], start=1)
    )
    assert result.added_columns == []
    assert db.rows("name", "region") == [("a", "EU"), ("b", "US")]
    changes = db.one('SELECT table_name, column_name, pg_type, change, topic, "partition", "offset" FROM {s}.cdc_schema_changes')
    assert changes == [(SPEC.pg_table, "region", "text", "add_column", TOPIC, 0, 0)]
    assert add_columns(db.conn, SPEC, [NewColumn("region", "text", None)], schema=db.schema) == []


def test_unstorable_values_reject_their_events_not_the_batch(db: Db) -> None:
    batch = at([
        event(Op.CREATE, key(1), 100, {"seq": 0, "name": "ok"}),
        event(Op.CREATE, key(2), 100, {"big": 2**70}),  # a Python int no bigint holds
        event(Op.CREATE, key(3), 100, {"name": "nul\x00byte"}),
        event(Op.CREATE, key(4), 100, {"at": datetime(2024, 1, 1)}),  # naive: not a timestamptz
        event(Op.CREATE, key(5), 100, {"amount": Decimal("1e200000")}),  # PostgreSQL's numeric refuses it
        event(Op.CREATE, {"id": uuid.UUID(int=6)}, 100, {"name": "no seq"}),
        event(Op.CREATE, key(7), 100, {"undeclared": 1}),
        event(Op.CREATE, key(8), 100, {"addr": Jsonb({"a": "x\x00y"})}),  # jsonb refuses \u0000
        event(Op.CREATE, key(9), 100, {"nums": [1, 2**40]}),  # an int[] element out of range
        # PostgreSQL itself refuses this one (varchar(3)): found by the COPY line it names
        event(Op.CREATE, key(10), 100, {}, new_columns=(NewColumn("code", "varchar(3)", "toolong"),)),
        event(Op.CREATE, key(11), 100, {}, new_columns=(NewColumn("code", "varchar(3)", "ok"),)),
    ])  # fmt: skip
    result = db.apply(batch)
    assert sorted(source[2] for source, _ in result.rejected) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert all(r.category == "invalid" and "1e200000" not in r.reason for _, r in result.rejected)
    assert "refused column code" in dict(result.rejected)[(TOPIC, 0, 9)].reason
    assert db.rows("seq", "name", "code") == [(0, "ok", None), (0, None, "ok")] and result.inserted == 2
    assert db.one('SELECT next_offset FROM {s}."_cdc_offsets"') == [(11,)]


def run_writer(db: Db, batches: list[list], errors: list[BaseException]) -> None:
    try:
        with db.connect() as conn:
            for batch in batches:
                db.apply(batch, conn=conn)
    except BaseException as error:
        errors.append(error)


def test_three_concurrent_writers_on_disjoint_partitions_and_the_newest_wins_on_a_shared_key(db: Db) -> None:
    writers: list[list[list]] = []
    for partition in range(3):
        events = [event(Op.CREATE, key(1000 * partition + n), 10 + n, {"big": n, "name": f"p{partition}"}) for n in range(300)]
        # every writer also writes keys 0..49, each with its own writetimes: partition 2's are newest
        events += [event(Op.UPDATE, key(n, 1), 1000 * (partition + 1) + n, {"name": f"shared-p{partition}"}) for n in range(50)]
        batch = at(events, partition)
        writers.append([batch[i : i + 50] for i in range(0, len(batch), 50)])
    errors: list[BaseException] = []
    threads = [threading.Thread(target=run_writer, args=(db, batches, errors)) for batches in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    rows = db.rows("id", "seq", "name", "_cdc_writetime")
    assert len(rows) == 3 * 300 + 50
    shared = [r for r in rows if r[1] == 1]
    assert {r[2] for r in shared} == {"shared-p2"} and all(r[3] == 3000 + r[0].int for r in shared)
    assert sorted(db.one('SELECT "partition", next_offset FROM {s}."_cdc_offsets"')) == [(0, 350), (1, 350), (2, 350)]


def test_a_writer_killed_mid_transaction_loses_and_doubles_nothing_after_a_retry(db: Db) -> None:
    week = 7 * 24 * 3600 * 1_000_000
    batch = at([event(Op.CREATE, key(n), 1 + n, {"big": n}) for n in range(100)])  # ancient: each is audited
    with db.connect() as blocker, db.connect() as writer:
        # hold the audit table so the writer stops after its upsert, inside its transaction
        blocker.execute("BEGIN")
        blocker.execute(sql.SQL("LOCK TABLE {}.cdc_staleness_audit IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(db.schema)))
        errors: list[BaseException] = []
        thread = threading.Thread(target=lambda: errors.append(_apply_expecting_failure(db, batch, writer, week)))
        thread.start()
        pid = writer.info.backend_pid
        deadline = time.monotonic() + 20
        while not db.one("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'", pid):
            assert time.monotonic() < deadline, "the writer never reached the audit table"
            time.sleep(0.05)
        assert db.one("SELECT pg_terminate_backend(%s)", pid) == [(True,)]
        thread.join(20)
        blocker.execute("ROLLBACK")
    assert len(errors) == 1 and isinstance(errors[0], PostgresUnavailable)
    assert db.rows() == [] and db.one('SELECT * FROM {s}."_cdc_offsets"') == []
    result = db.apply(batch, stale_threshold_us=week)
    assert (result.inserted, len(result.audit)) == (100, 100)
    assert db.apply(batch, stale_threshold_us=week).already_applied == 100
    assert len(db.rows()) == 100 and db.one("SELECT count(*) FROM {s}.cdc_staleness_audit") == [(100,)]


def _apply_expecting_failure(db: Db, batch: list, conn: psycopg.Connection, threshold: int) -> BaseException:
    try:
        db.apply(batch, conn=conn, stale_threshold_us=threshold)
    except BaseException as error:
        return error
    raise AssertionError("the killed writer committed")


def test_an_unreachable_postgres_is_unavailable_and_opens_the_breaker(test_stack: LocalStack) -> None:
    resource = PostgresResource(
        connection=PostgresConnection(port=1, connect_timeout_s=2, circuit_failure_threshold=2), password="s3cret-value"
    )
    for _ in range(2):
        with pytest.raises(PostgresUnavailable) as failed:
            resource.connect()
        assert "cannot connect" in str(failed.value) and "s3cret" not in str(failed.value)
    with pytest.raises(PostgresUnavailable, match="circuit open"):
        resource.connect()
    assert resource.breakers.state("127.0.0.1:1").value == "open"
    working = PostgresResource(connection=PostgresConnection(port=test_stack.pg_port, statement_timeout_s=5))
    with working.connect() as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("5s",)


def test_throughput_of_batches_of_five_thousand(db: Db) -> None:
    events = []
    for n in range(20_000):  # 60% new rows, 30% partial updates, 10% deletes, over 12,000 keys
        if n < 12_000:
            events.append(event(Op.CREATE, key(n), 1000 + n, {**FULL, "big": n}))
        elif n < 18_000:
            events.append(event(Op.UPDATE, key(n - 12_000), 1000 + n, {"name": f"u{n}", "big": n}))
        else:
            events.append(event(Op.DELETE, key(n - 18_000), 1000 + n))
    batch = at(events)
    started = time.perf_counter()
    totals = [db.apply(batch[i : i + 5000]) for i in range(0, len(batch), 5000)]
    seconds = time.perf_counter() - started
    print(f"\nCDC sink: {len(events)} events in {seconds:.2f}s = {len(events) / seconds:,.0f} events/s")
    assert sum(t.applied for t in totals) == 20_000 and len(db.rows()) == 10_000
