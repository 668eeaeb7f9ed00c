"""The DLQ domain's test resources: its health thresholds, as configured by default."""

import pytest

from pipeline_defs.defs.dlq.settings import DlqLimitsResource, DlqSettings


@pytest.fixture
def dlq_resources() -> dict[str, object]:
    return {"dlq_limits": DlqLimitsResource(limits=DlqSettings())}
