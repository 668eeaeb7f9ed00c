"""Realistic ClaimX events: each one changes the ``ClaimXWorld`` first, then says so, the way
the Eventhouse reports what happened in ClaimX. Plus the broken ones a real export also has."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Optional

from pipeline_sim.claimx_world import ClaimXWorld

# event type -> share of traffic
MIX = {
    "PROJECT_CREATED": 0.10,
    "PROJECT_FILE_ADDED": 0.40,
    "PROJECT_MFN_ADDED": 0.05,
    "CUSTOM_TASK_ASSIGNED": 0.10,
    "CUSTOM_TASK_COMPLETED": 0.08,
    "POLICYHOLDER_INVITED": 0.07,
    "POLICYHOLDER_JOINED": 0.07,
    "VIDEO_COLLABORATION_INVITE_SENT": 0.07,
    "VIDEO_COLLABORATION_COMPLETED": 0.06,
}


class ClaimXEventSource:
    def __init__(self, world: ClaimXWorld, rng: random.Random, active_projects: int = 50):
        self.world = world
        self.rng = rng
        self.projects: list[str] = []
        self.active_projects = active_projects

    def event(self, event_type: Optional[str] = None, project_id: Optional[str] = None) -> dict[str, Any]:
        """The next event: of ``event_type`` (else drawn from the mix), on ``project_id`` (else
        an active project, or a new one; a project's first event need not announce it, as in
        the real export)."""
        event_type = event_type or self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
        if project_id is None and (event_type == "PROJECT_CREATED" or not self.projects):
            project_id = self.world.new_project()
            self.projects = ([*self.projects, project_id])[-self.active_projects :]
        project_id = project_id or self.rng.choice(self.projects)
        fields = self._CHANGES[event_type](self, project_id)
        return self._message(event_type, project_id, **fields)

    def _message(self, event_type: str, project_id: str, **ids: str) -> dict[str, Any]:
        return {
            "event_id": str(uuid.UUID(int=self.rng.getrandbits(128))),
            "event_type": event_type,
            "project_id": int(project_id) if project_id.isdigit() else project_id,
            "ingested_at": datetime.now(UTC).isoformat(),
            **ids,
            "raw_data": {"source": "claimx-kql", "projectId": project_id, **ids},
        }

    def _created(self, project_id: str) -> dict[str, str]:
        return {}

    def _file_added(self, project_id: str) -> dict[str, str]:
        return {"media_id": self.world.add_media(project_id)}

    def _mfn(self, project_id: str) -> dict[str, str]:
        return {"master_file_name": self.world.set_master_file_name(project_id)}

    def _task_assigned(self, project_id: str) -> dict[str, str]:
        return {"task_assignment_id": self.world.assign_task(project_id)}

    def _task_completed(self, project_id: str) -> dict[str, str]:
        open_tasks = [a for a, status in self.world.project(project_id).tasks.items() if status == "ASSIGNED"]
        assignment_id = self.rng.choice(open_tasks) if open_tasks else self.world.assign_task(project_id)
        self.world.complete_task(assignment_id)
        return {"task_assignment_id": assignment_id}

    def _invited(self, project_id: str) -> dict[str, str]:
        self.world.set_policyholder(project_id, "INVITED")
        return {}

    def _joined(self, project_id: str) -> dict[str, str]:
        self.world.set_policyholder(project_id, "JOINED")
        return {}

    def _video_invite(self, project_id: str) -> dict[str, str]:
        return {"video_collaboration_id": self.world.invite_video(project_id)}

    def _video_completed(self, project_id: str) -> dict[str, str]:
        waiting = [v for v, status in self.world.project(project_id).videos.items() if status == "INVITE_SENT"]
        collaboration_id = self.rng.choice(waiting) if waiting else self.world.invite_video(project_id)
        self.world.complete_video(collaboration_id)
        return {"video_collaboration_id": collaboration_id}

    _CHANGES: dict[str, Callable[[ClaimXEventSource, str], dict[str, str]]] = {
        "PROJECT_CREATED": _created,
        "PROJECT_FILE_ADDED": _file_added,
        "PROJECT_MFN_ADDED": _mfn,
        "CUSTOM_TASK_ASSIGNED": _task_assigned,
        "CUSTOM_TASK_COMPLETED": _task_completed,
        "POLICYHOLDER_INVITED": _invited,
        "POLICYHOLDER_JOINED": _joined,
        "VIDEO_COLLABORATION_INVITE_SENT": _video_invite,
        "VIDEO_COLLABORATION_COMPLETED": _video_completed,
    }


MALFORMED_CLAIMX_MESSAGES = [
    b'{"event_id": "x1", "event_type": "PROJECT_CREATED"',  # cut off
    json.dumps(
        {"event_id": "x2", "event_type": "PROJECT_ARCHIVED", "project_id": 1, "ingested_at": "2026-01-01T00:00:00Z"}
    ).encode(),
    json.dumps(
        {"event_id": "x3", "event_type": "PROJECT_FILE_ADDED", "project_id": 1, "ingested_at": "2026-01-01T00:00:00Z"}
    ).encode(),
    json.dumps({"event_id": "x4", "event_type": "PROJECT_CREATED", "ingested_at": "2026-01-01T00:00:00Z"}).encode(),
    json.dumps({"event_id": "x5", "event_type": "PROJECT_CREATED", "project_id": 1, "ingested_at": "last tuesday"}).encode(),
]
