"""A little ClaimX: projects with contacts, tasks, media and video collaborations whose state
changes as events happen. The API double answers from it; the event generator changes it and
emits the event that says so, so what the pipeline fetches always matches what it was told."""

from __future__ import annotations

import hashlib
import random
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Optional
from urllib.parse import quote

MEDIA_KINDS = [("jpg", "image/jpeg", 0.8), ("mp4", "video/mp4", 0.1), ("pdf", "application/pdf", 0.1)]
ROOMS = ["kitchen", "living_room", "roof", "basement", "bathroom", "exterior", "garage"]
TEMPLATES = {
    "tpl-100": ("Contents inventory", "List damaged contents with photos"),
    "tpl-200": ("Roof photos", "Photograph each roof slope"),
    "tpl-300": ("Water mitigation", "Moisture readings per room"),
}
LINK_LIFETIME = timedelta(days=14)


@dataclass
class ProjectState:
    project_id: str
    created_at: datetime
    media: list[str] = field(default_factory=list)
    tasks: dict[str, str] = field(default_factory=dict)  # assignment id -> ASSIGNED | COMPLETED
    videos: dict[str, str] = field(default_factory=dict)  # collaboration id -> INVITE_SENT | COMPLETED
    policyholder: str = "INVITED"  # INVITED | JOINED
    master_file_name: Optional[str] = None
    updated_at: Optional[datetime] = None


def _seeded(*parts: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256("|".join(parts).encode()).digest()[:8], "big"))


def _iso(moment: Optional[datetime]) -> Optional[str]:
    return moment.isoformat() if moment else None


def owner(child_id: str) -> str:
    """Child ids are ``<project id>-<kind><n>``: the project they belong to."""
    return child_id.rsplit("-", 1)[0]


class ClaimXWorld:
    def __init__(self, media_base_url: str, link_lifetime_s: int = 3600):
        self.media_base_url = media_base_url.rstrip("/")
        self.link_lifetime_s = link_lifetime_s
        self._projects: dict[str, ProjectState] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # a snapshot for a server in another process
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ---- state ----------------------------------------------------------------------------
    def project(self, project_id: str) -> ProjectState:
        """Any project id exists; one first asked about starts with a task and an invited
        policyholder. Media appear only through ``add_media``, each with its event."""
        with self._lock:
            state = self._projects.get(project_id)
            if state is None:
                rng = _seeded(project_id)
                created = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randint(0, 400_000))
                state = self._projects[project_id] = ProjectState(project_id, created)
                state.tasks = {f"{project_id}-t0": "ASSIGNED"}
            return state

    def new_project(self) -> str:
        project_id = str(5_000_000 + uuid.uuid4().int % 4_000_000)
        self.project(project_id)
        return project_id

    def add_media(self, project_id: str) -> str:
        state = self.project(project_id)
        media_id = f"{project_id}-m{len(state.media)}"
        state.media.append(media_id)
        return media_id

    def assign_task(self, project_id: str) -> str:
        state = self.project(project_id)
        assignment_id = f"{project_id}-t{len(state.tasks)}"
        state.tasks[assignment_id] = "ASSIGNED"
        return assignment_id

    def complete_task(self, assignment_id: str) -> None:
        self.project(owner(assignment_id)).tasks[assignment_id] = "COMPLETED"

    def invite_video(self, project_id: str) -> str:
        state = self.project(project_id)
        collaboration_id = f"{project_id}-v{len(state.videos)}"
        state.videos[collaboration_id] = "INVITE_SENT"
        return collaboration_id

    def complete_video(self, collaboration_id: str) -> None:
        self.project(owner(collaboration_id)).videos[collaboration_id] = "COMPLETED"

    def set_policyholder(self, project_id: str, status: str) -> None:
        self.project(project_id).policyholder = status

    def set_master_file_name(self, project_id: str) -> str:
        state = self.project(project_id)
        state.master_file_name = f"MFN-{project_id}-{_seeded(project_id, 'mfn').randint(100, 999)}"
        state.updated_at = datetime.now(UTC)
        return state.master_file_name

    # ---- API answers (camelCase, as the real API) -----------------------------------------
    def project_json(self, project_id: str) -> dict[str, Any]:
        state, rng = self.project(project_id), _seeded(project_id, "project")
        return {
            "projectId": int(project_id) if project_id.isdigit() else project_id,
            "projectNumber": f"P-{project_id}",
            "claimNumber": f"CLM-{rng.randint(10**7, 10**8 - 1)}",
            "policyNumber": f"POL-{rng.randint(10**6, 10**7 - 1)}",
            "carrierName": rng.choice(["Acme Mutual", "Harbor Insurance", "Summit P&C"]),
            "status": "OPEN",
            "lossType": rng.choice(["WATER", "WIND", "HAIL", "FIRE"]),
            "dateOfLoss": (state.created_at - timedelta(days=rng.randint(1, 20))).date().isoformat(),
            "masterFileName": state.master_file_name,
            "address": {
                "street": f"{rng.randint(1, 9999)} Main St",
                "city": rng.choice(["Springfield", "Riverton", "Lakeside"]),
                "state": rng.choice(["TX", "FL", "OK", "CO"]),
                "postalCode": f"{rng.randint(10000, 99999)}",
            },
            "createdAt": _iso(state.created_at),
            "updatedAt": _iso(state.updated_at or state.created_at),
        }

    def contacts_json(self, project_id: str) -> list[dict[str, Any]]:
        state, rng = self.project(project_id), _seeded(project_id, "contacts")
        first, last = rng.choice(["Ana", "Ben", "Chen", "Dana"]), rng.choice(["Lopez", "Okafor", "Smith", "Ito"])
        invited = state.created_at + timedelta(hours=1)
        return [
            {
                "contactId": f"{project_id}-c0",
                "projectId": project_id,
                "role": "POLICYHOLDER",
                "firstName": first,
                "lastName": last,
                "email": f"{first.lower()}.{last.lower()}@example.com",
                "phone": f"+1555{rng.randint(1000000, 9999999)}",
                "inviteStatus": state.policyholder,
                "invitedAt": _iso(invited),
                "joinedAt": _iso(invited + timedelta(hours=3)) if state.policyholder == "JOINED" else None,
            },
            {
                "contactId": f"{project_id}-c1",
                "projectId": project_id,
                "role": "ADJUSTER",
                "firstName": "Field",
                "lastName": "Adjuster",
                "email": "adjuster@carrier.example",
                "inviteStatus": "JOINED",
            },
        ]

    def media_json(self, project_id: str, expired: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
        state = self.project(project_id)
        return [self._media_item(project_id, media_id, media_id in expired) for media_id in state.media]

    def _media_item(self, project_id: str, media_id: str, expired: bool) -> dict[str, Any]:
        rng = _seeded(media_id)
        extension, content_type, _ = rng.choices(MEDIA_KINDS, weights=[w for *_, w in MEDIA_KINDS])[0]
        signed = datetime.now(UTC) - (timedelta(seconds=2 * self.link_lifetime_s) if expired else timedelta())
        return {
            "mediaId": media_id,
            "projectId": project_id,
            "fileName": f"{rng.choice(ROOMS)}_{media_id.rsplit('-m', 1)[1]}.{extension}",
            "fileType": extension,
            "contentType": content_type,
            "sizeBytes": 64 * 1024,
            "description": "Photo taken in the ClaimX app",
            "capturedAt": _iso(self.project(project_id).created_at + timedelta(hours=2)),
            "uploadedAt": _iso(self.project(project_id).created_at + timedelta(hours=2, minutes=5)),
            "downloadUrl": self.presigned_url(f"files/claimx/{project_id}/{media_id}.{extension}", signed),
            "urlExpiresAt": _iso(signed + timedelta(seconds=self.link_lifetime_s)),
        }

    def presigned_url(self, path: str, signed_at: datetime) -> str:
        stamp = signed_at.strftime("%Y%m%dT%H%M%SZ")
        credential = quote(f"SIMKEY/{stamp[:8]}/us-east-1/s3/aws4_request", safe="")
        signature = hashlib.sha256(f"{path}{stamp}".encode()).hexdigest()
        return (
            f"{self.media_base_url}/{path}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={credential}"
            f"&X-Amz-Date={stamp}&X-Amz-Expires={self.link_lifetime_s}&X-Amz-SignedHeaders=host&X-Amz-Signature={signature}"
        )

    def tasks_json(self, project_id: str) -> list[dict[str, Any]]:
        return [task for a in self.project(project_id).tasks if (task := self.custom_task_json(a)) is not None]

    def custom_task_json(self, assignment_id: str) -> Optional[dict[str, Any]]:
        state = self.project(owner(assignment_id))
        status = state.tasks.get(assignment_id)
        if status is None:
            return None
        rng = _seeded(assignment_id)
        template_id = rng.choice(sorted(TEMPLATES))
        assigned = state.created_at + timedelta(hours=rng.randint(1, 48))
        name, description = TEMPLATES[template_id]
        return {
            "assignmentId": assignment_id,
            "projectId": state.project_id,
            "status": status,
            "assignedTo": "policyholder",
            "assignedAt": _iso(assigned),
            "completedAt": _iso(assigned + timedelta(days=1)) if status == "COMPLETED" else None,
            "dueAt": _iso(assigned + timedelta(days=7)),
            "template": {"templateId": template_id, "name": name, "description": description, "formVersion": "3"},
            "externalLink": {
                "linkId": f"{assignment_id}-link",
                "url": f"https://customer.claimx.example/t/{assignment_id}?token={hashlib.sha256(assignment_id.encode()).hexdigest()[:24]}",
                "createdAt": _iso(assigned),
                "expiresAt": _iso(assigned + LINK_LIFETIME),
                "accessCount": 2 if status == "COMPLETED" else 0,
            },
        }

    def video_json(self, collaboration_id: str) -> Optional[dict[str, Any]]:
        state = self.project(owner(collaboration_id))
        status = state.videos.get(collaboration_id)
        if status is None:
            return None
        invited = state.created_at + timedelta(days=1)
        done = status == "COMPLETED"
        return {
            "collaborationId": collaboration_id,
            "projectId": state.project_id,
            "status": status,
            "invitedAt": _iso(invited),
            "startedAt": _iso(invited + timedelta(hours=2)) if done else None,
            "completedAt": _iso(invited + timedelta(hours=2, minutes=25)) if done else None,
            "durationSeconds": 1500 if done else None,
            "participantCount": 2 if done else None,
            "recordingCount": 1 if done else 0,
        }
