"""What the UI shows, held still: asset keys with their groups, kinds, owners and pools; checks
and whether they block; jobs; sensors and schedules with their targets and default status. A
change here is a change users see: review the diff, then refresh with ``UPDATE_SNAPSHOTS=1``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from pipeline_defs.definitions import defs as build_defs

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def describe(defs: dg.Definitions) -> dict[str, Any]:
    graph = defs.resolve_asset_graph()
    assets = {}
    for spec in defs.resolve_all_asset_specs():
        node = graph.get(spec.key)
        assets[spec.key.to_user_string()] = {
            "group": spec.group_name,
            "kinds": sorted(spec.kinds),
            "owners": sorted(spec.owners),
            "partitioned": spec.partitions_def is not None,
            "pools": sorted(node.pools or []),
            "tags": dict(sorted(spec.tags.items())),
        }
    checks = {
        f"{key.asset_key.to_user_string()}:{key.name}": graph.get_check_spec(key).blocking
        for key in sorted(graph.asset_check_keys)
    }
    sensors = {
        sensor.name: {
            "jobs": sorted(job.name for job in sensor.jobs) if sensor.has_jobs else [],
            "default": sensor.default_status.value,
        }
        for sensor in defs.sensors or ()
    }
    schedules = {
        schedule.name: {"job": schedule.job_name, "cron": schedule.cron_schedule, "default": schedule.default_status.value}
        for schedule in defs.schedules or ()
        if isinstance(schedule, dg.ScheduleDefinition)
    }
    jobs = sorted(job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__"))
    return {
        "assets": dict(sorted(assets.items())),
        "checks": checks,
        "jobs": jobs,
        "sensors": dict(sorted(sensors.items())),
        "schedules": dict(sorted(schedules.items())),
    }


def test_what_the_ui_shows_matches_the_snapshot():
    current = describe(build_defs())
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())
