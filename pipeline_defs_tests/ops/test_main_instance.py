"""The ops service waits for a Dagster instance whose storage is still starting, and fails at once
on configuration that waiting does not fix."""

from __future__ import annotations

import logging

import dagster as dg
import pytest

from pipeline_defs.ops.__main__ import _instance

LOG = logging.getLogger("test")


def test_storage_that_is_not_up_yet_is_waited_for(monkeypatch: pytest.MonkeyPatch):
    instance = dg.DagsterInstance.ephemeral()
    answers: list[object] = [OSError("connection refused"), OSError("connection refused"), instance]

    def get() -> dg.DagsterInstance:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, dg.DagsterInstance)
        return answer

    monkeypatch.setattr(dg.DagsterInstance, "get", staticmethod(get))
    assert _instance(LOG, attempts=3, wait_s=0) is instance


def test_storage_that_never_comes_up_fails_after_the_last_attempt(monkeypatch: pytest.MonkeyPatch):
    calls = 0

    def get() -> dg.DagsterInstance:
        nonlocal calls
        calls += 1
        raise OSError("connection refused")

    monkeypatch.setattr(dg.DagsterInstance, "get", staticmethod(get))
    with pytest.raises(OSError, match="connection refused"):
        _instance(LOG, attempts=3, wait_s=0)
    assert calls == 3


def test_no_dagster_home_fails_at_once(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with pytest.raises(dg.DagsterError, match="DAGSTER_HOME"):
        _instance(LOG, attempts=100, wait_s=60)
