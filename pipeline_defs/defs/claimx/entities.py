"""The seven ClaimX entity tables (the seeds' tables and merge keys) and the rows an API
answer gives each of them. Pure functions."""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import urlsplit

import pyarrow as pa

from pipeline_defs.defs.claimx.api_models import Contact, CustomTask, Media, Project, VideoCollaboration
from pipeline_defs.lib.delta.entities import EntityTable

TS = pa.timestamp("us", tz="UTC")


def _table(name: str, keys: tuple[str, ...], fields: list[tuple[str, pa.DataType]]) -> EntityTable:
    return EntityTable(
        name=name,
        keys=keys,
        columns=pa.schema([pa.field(n, t, nullable=n not in keys) for n, t in fields]),
    )


PROJECTS = _table(
    "claimx_projects",
    ("project_id",),
    [
        ("project_id", pa.string()),
        ("project_number", pa.string()),
        ("claim_number", pa.string()),
        ("policy_number", pa.string()),
        ("carrier_name", pa.string()),
        ("status", pa.string()),
        ("loss_type", pa.string()),
        ("date_of_loss", pa.date32()),
        ("master_file_name", pa.string()),
        ("street", pa.string()),
        ("city", pa.string()),
        ("state", pa.string()),
        ("postal_code", pa.string()),
        ("created_at", TS),
        ("updated_at", TS),
    ],
)
CONTACTS = _table(
    "claimx_contacts",
    ("contact_id", "project_id"),
    [
        ("contact_id", pa.string()),
        ("project_id", pa.string()),
        ("role", pa.string()),
        ("first_name", pa.string()),
        ("last_name", pa.string()),
        ("email", pa.string()),
        ("phone", pa.string()),
        ("invite_status", pa.string()),
        ("invited_at", TS),
        ("joined_at", TS),
    ],
)
MEDIA = _table(
    "claimx_media",
    ("media_id",),
    [
        ("media_id", pa.string()),
        ("project_id", pa.string()),
        ("file_name", pa.string()),
        ("file_type", pa.string()),
        ("content_type", pa.string()),
        ("size_bytes", pa.int64()),
        ("description", pa.string()),
        ("captured_at", TS),
        ("uploaded_at", TS),
        ("task_assignment_id", pa.string()),
    ],
)
TASKS = _table(
    "claimx_tasks",
    ("task_id",),
    [
        ("task_id", pa.string()),
        ("project_id", pa.string()),
        ("template_id", pa.string()),
        ("status", pa.string()),
        ("assigned_to", pa.string()),
        ("assigned_at", TS),
        ("completed_at", TS),
        ("due_at", TS),
    ],
)
TASK_TEMPLATES = _table(
    "claimx_task_templates",
    ("template_id", "project_id"),
    [
        ("template_id", pa.string()),
        ("project_id", pa.string()),
        ("name", pa.string()),
        ("description", pa.string()),
        ("form_version", pa.string()),
    ],
)
EXTERNAL_LINKS = _table(
    "claimx_external_links",
    ("link_id",),
    [
        ("link_id", pa.string()),
        ("project_id", pa.string()),
        ("task_id", pa.string()),
        ("link_host", pa.string()),
        ("created_at", TS),
        ("expires_at", TS),
        ("access_count", pa.int64()),
    ],
)
VIDEO_COLLAB = _table(
    "claimx_video_collab",
    ("collaboration_id",),
    [
        ("collaboration_id", pa.string()),
        ("project_id", pa.string()),
        ("status", pa.string()),
        ("invited_at", TS),
        ("started_at", TS),
        ("completed_at", TS),
        ("duration_seconds", pa.int64()),
        ("participant_count", pa.int64()),
        ("recording_count", pa.int64()),
    ],
)

ENTITY_TABLES: tuple[EntityTable, ...] = (PROJECTS, CONTACTS, MEDIA, TASKS, TASK_TEMPLATES, EXTERNAL_LINKS, VIDEO_COLLAB)

Rows = dict[str, list[dict[str, Any]]]  # table name -> rows


def project_rows(project: Project) -> Rows:
    address = project.address.model_dump() if project.address else {}
    row = project.model_dump(exclude={"address"}) | {k: address.get(k) for k in ("street", "city", "state", "postal_code")}
    return {PROJECTS.name: [row]}


def contact_rows(contacts: list[Contact]) -> Rows:
    return {CONTACTS.name: [c.model_dump() for c in contacts]}


def media_rows(media: list[Media]) -> Rows:
    # the presigned URL is a short-lived credential: it travels in download tasks, never in tables
    return {MEDIA.name: [m.model_dump(exclude={"download_url", "url_expires_at"}) for m in media]}


def task_rows(tasks: list[CustomTask]) -> Rows:
    rows: Rows = {TASKS.name: [], TASK_TEMPLATES.name: [], EXTERNAL_LINKS.name: []}
    for task in tasks:
        template = task.template
        rows[TASKS.name].append(
            task.model_dump(include={"project_id", "status", "assigned_to", "assigned_at", "completed_at", "due_at"})
            | {"task_id": task.assignment_id, "template_id": template.template_id if template else None}
        )
        if template is not None:
            rows[TASK_TEMPLATES.name].append(template.model_dump() | {"project_id": task.project_id})
        if task.external_link is not None:
            link = task.external_link
            rows[EXTERNAL_LINKS.name].append(
                link.model_dump(exclude={"url"})
                | {"project_id": task.project_id, "task_id": task.assignment_id, "link_host": _host(link.url)}
            )
    return rows


def video_rows(collaboration: VideoCollaboration) -> Rows:
    return {VIDEO_COLLAB.name: [collaboration.model_dump()]}


def _host(url: Optional[str]) -> Optional[str]:
    return urlsplit(url).hostname if url else None
