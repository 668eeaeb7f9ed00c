"""The maintenance domain's test resources: its settings, as configured by default."""

import pytest

from pipeline_defs.defs.maintenance.settings import MaintenanceResource, MaintenanceSettings


@pytest.fixture
def maintenance_resources() -> dict[str, object]:
    return {"delta_maintenance": MaintenanceResource(settings=MaintenanceSettings())}
