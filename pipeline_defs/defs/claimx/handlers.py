"""What the ClaimX API says about each kind of event: one handler per event type, each asking
the API for the entities the event touched and turning the answers into entity-table rows (and
the media files to download). Pure but for the API calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipeline_defs.defs.claimx.api import ApiError, ClaimXApiClient, found
from pipeline_defs.defs.claimx.api_models import Media
from pipeline_defs.defs.claimx.entities import (
    ENTITY_TABLES,
    Rows,
    contact_rows,
    media_rows,
    project_rows,
    task_rows,
    video_rows,
)
from pipeline_defs.defs.claimx.models import ClaimXDownloadTask, ClaimXEnrichmentTask, ClaimXEventType
from pipeline_defs.lib.ingest.failures import FailureCategory, TaskFailure


@dataclass
class Enriched:
    """What one event adds to the entity tables, and the media it asks to download."""

    rows: Rows = field(default_factory=dict)
    downloads: list[ClaimXDownloadTask] = field(default_factory=list)


def combined(*parts: Rows) -> Rows:
    rows: Rows = {}
    for part in parts:
        add_rows(rows, part)
    return rows


def add_rows(into: Rows, part: Rows, **lineage: Any) -> None:
    for table, table_rows in part.items():
        into.setdefault(table, []).extend(row | lineage for row in table_rows)


def download_task(media: Media, event: ClaimXEnrichmentTask) -> ClaimXDownloadTask:
    return ClaimXDownloadTask(
        media_id=media.media_id,
        project_id=media.project_id,
        download_url=media.download_url,
        file_name=media.file_name,
        file_type=media.file_type,
        expires_at=media.url_expires_at,
        source_event_id=event.event_id,
        source=event.source,
    )


# ---- handlers: one per kind of event ----------------------------------------------------


async def project_created(event: ClaimXEnrichmentTask, api: ClaimXApiClient) -> Enriched:
    answers = await asyncio.gather(
        api.get_project(event.project_id),
        api.get_project_contacts(event.project_id),
        api.get_project_tasks(event.project_id),
        return_exceptions=True,  # no call is left running when one fails
    )
    project, contacts, tasks = answers
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    assert not isinstance(contacts, BaseException) and not isinstance(tasks, BaseException)
    return Enriched(
        combined(
            project_rows(found(project, f"project {event.project_id}")),  # type: ignore[arg-type]
            contact_rows(contacts or []),
            task_rows(tasks or []),
        )
    )


async def project_changed(event: ClaimXEnrichmentTask, api: ClaimXApiClient) -> Enriched:
    return Enriched(project_rows(found(await api.get_project(event.project_id), f"project {event.project_id}")))


async def file_added(event: ClaimXEnrichmentTask, api: ClaimXApiClient) -> Enriched:
    media = found(await api.get_project_media(event.project_id), f"project {event.project_id}")
    items = [m for m in media if m.media_id == event.media_id]
    if not items:  # the listing can lag the event: worth another try later
        raise ApiError(
            TaskFailure(
                FailureCategory.TRANSIENT,
                "media_not_listed",
                f"media {event.media_id} not yet listed for project {event.project_id}",
            )
        )
    return Enriched(media_rows(items), [download_task(m, event) for m in items])


async def custom_task(event: ClaimXEnrichmentTask, api: ClaimXApiClient) -> Enriched:
    assignment = event.task_assignment_id or ""
    task = found(await api.get_custom_task(assignment), f"custom task {assignment}")
    return Enriched(task_rows([task]))


async def policyholder(event: ClaimXEnrichmentTask, api: ClaimXApiClient) -> Enriched:
    contacts = found(await api.get_project_contacts(event.project_id), f"contacts of project {event.project_id}")
    return Enriched(contact_rows(contacts))


async def video_collaboration(event: ClaimXEnrichmentTask, api: ClaimXApiClient) -> Enriched:
    collaboration_id = event.video_collaboration_id or ""
    collaboration = await api.get_video_collaboration(collaboration_id)
    return Enriched(video_rows(found(collaboration, f"video collaboration {collaboration_id}")))


Handler = Callable[[ClaimXEnrichmentTask, ClaimXApiClient], Awaitable[Enriched]]

HANDLERS: dict[ClaimXEventType, Handler] = {
    ClaimXEventType.PROJECT_CREATED: project_created,
    ClaimXEventType.PROJECT_MFN_ADDED: project_changed,
    ClaimXEventType.PROJECT_FILE_ADDED: file_added,
    ClaimXEventType.CUSTOM_TASK_ASSIGNED: custom_task,
    ClaimXEventType.CUSTOM_TASK_COMPLETED: custom_task,
    ClaimXEventType.POLICYHOLDER_INVITED: policyholder,
    ClaimXEventType.POLICYHOLDER_JOINED: policyholder,
    ClaimXEventType.VIDEO_COLLABORATION_INVITE_SENT: video_collaboration,
    ClaimXEventType.VIDEO_COLLABORATION_COMPLETED: video_collaboration,
}


Outcome = Enriched | TaskFailure  # what enriching one event came to


async def handled(task: ClaimXEnrichmentTask, api: ClaimXApiClient) -> Outcome:
    """The event's handler; an API failure is its outcome, and its rows must fit their tables."""
    try:
        enriched = await HANDLERS[task.event_type](task, api)
    except ApiError as error:
        return error.failure
    fitted(enriched.rows)
    return enriched


def fitted(rows: Rows) -> Rows:
    """``rows``, if each fits its entity table's columns; raises (for the guard) if one does not."""
    for table in ENTITY_TABLES:
        if rows.get(table.name):
            pa.Table.from_pylist([{c: row.get(c) for c in table.columns.names} for row in rows[table.name]], schema=table.columns)
    return rows
