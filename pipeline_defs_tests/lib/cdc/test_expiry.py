"""TTL expiry and tombstone cleanup on the test stack's PostgreSQL: expired rows go (with a
tombstone, so a late older event cannot revive them), live ones stay, a newer write revives,
and tombstones older than the grace period are dropped while recent ones keep their key dead."""

from __future__ import annotations

import time

from pipeline_defs.lib.cdc import expiry
from pipeline_defs.lib.cdc.expiry import expire
from pipeline_defs.lib.cdc.model import Cell, ChangeEvent, Op
from pipeline_defs_tests.support.cdc_sink import SPEC, Db, at, event, key

NOW_US = time.time_ns() // 1000
HOUR_US = 3600 * 1_000_000
T = NOW_US - 2 * HOUR_US  # writetimes are real instants: tombstones are judged by their age


def ttl_insert(n: int, wt: int, expires_us: int) -> ChangeEvent:
    return ChangeEvent(Op.CREATE, SPEC, key(n), {"name": Cell(f"ttl{n}", expires_at_us=expires_us)}, wt)


def expire_now(db: Db, grace_days: float = 10.0) -> expiry.ExpiryResult:
    return expire(db.conn, SPEC, db.schema, soft_delete=db.soft, tombstone_grace_days=grace_days)


def test_expired_rows_are_purged_with_a_tombstone_and_live_ones_stay(db: Db) -> None:
    db.apply(at([ttl_insert(1, T, NOW_US - HOUR_US), ttl_insert(2, T, NOW_US + HOUR_US)]))
    db.apply(at([event(Op.CREATE, key(3), T, {"name": "forever"})], start=2))
    done = expire_now(db)
    assert done.rows_expired == 1
    assert [r[2] for r in db.rows()] == ["ttl2", "forever"]
    # a late, older write of the expired key stays out, as in Cassandra
    late = db.apply(at([event(Op.UPDATE, key(1), T - 10, {"name": "late"})], start=3))
    assert late.stale == 1 and len(db.rows()) == 2
    # a newer write brings it back
    db.apply(at([event(Op.CREATE, key(1), T + 100, {"name": "again"})], start=4))
    assert [r[2] for r in db.rows()] == ["again", "ttl2", "forever"]
    assert expire_now(db).rows_expired == 0


def test_an_insert_without_ttl_keeps_the_row_alive_an_update_does_not(db: Db) -> None:
    past = NOW_US - HOUR_US
    db.apply(at([ttl_insert(1, T, past), ttl_insert(2, T, past)]))
    db.apply(at([event(Op.CREATE, key(1), T + 100, {"name": "reinserted"})], start=2))  # a new row marker, no TTL
    db.apply(at([event(Op.UPDATE, key(2), T + 100, {"big": 5})], start=3))  # cells only: the row marker still expires
    assert expire_now(db).rows_expired == 1
    assert [r[2] for r in db.rows()] == ["reinserted"]


def test_soft_delete_mode_marks_expired_rows_once(soft_db: Db) -> None:
    soft_db.apply(at([ttl_insert(1, T, NOW_US - HOUR_US)]))
    assert expire_now(soft_db).rows_expired == 1
    assert soft_db.rows("name", "_cdc_deleted") == [("ttl1", True)]
    assert expire_now(soft_db).rows_expired == 0


def test_tombstones_past_the_grace_period_are_dropped(db: Db, monkeypatch) -> None:
    monkeypatch.setattr(expiry, "BATCH_ROWS", 2)  # several batches
    old = NOW_US - 11 * 24 * HOUR_US
    db.apply(at([event(Op.CREATE, key(n), old - 10, {"name": "x"}) for n in range(5)]))
    db.apply(at([event(Op.DELETE, key(n), old) for n in range(5)], start=5))
    db.apply(at([event(Op.DELETE, key(9), NOW_US)], start=10))
    done = expire_now(db, grace_days=10)
    assert done.tombstones_dropped == 5
    assert db.one('SELECT writetime FROM {s}."_cdc_tombstones"') == [(NOW_US,)]
