"""The sink's test tables: a schema of their own per test, hard or soft deletes."""

from collections.abc import Iterator

import pytest

from pipeline_defs_tests.support.cdc_sink import Db, make_db


@pytest.fixture
def db(cdc_database: str) -> Iterator[Db]:
    yield from make_db(cdc_database)


@pytest.fixture
def soft_db(cdc_database: str) -> Iterator[Db]:
    yield from make_db(cdc_database, soft=True)
