"""Fresh presigned links for ClaimX media: a link that expired (or a backfill task that never
had one) is renewed from the project's media listing, one call per project."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pipeline_defs.defs.claimx.api import ApiError, ClaimXApiClient, ClaimXApiResource, found
from pipeline_defs.defs.claimx.models import ClaimXDownloadTask
from pipeline_defs.lib.attachments.tasks import AttachmentTask
from pipeline_defs.lib.ingest.failures import FailureCategory, TaskFailure, failure_of
from pipeline_defs.lib.ingest.guard import RejectedRecord, guarded_async

Refreshed = dict[tuple[str, ...], AttachmentTask | TaskFailure]


@dataclass
class MediaUrlRefresher:
    """The ``UrlRefresher`` of ClaimX media downloads."""

    api: ClaimXApiResource

    def is_stale(self, task: AttachmentTask, now: datetime) -> bool:
        return isinstance(task, ClaimXDownloadTask) and task.is_stale(now)

    async def refresh(self, tasks: Sequence[AttachmentTask]) -> Refreshed:
        by_project: dict[str, list[ClaimXDownloadTask]] = {}
        for task in tasks:
            assert isinstance(task, ClaimXDownloadTask)
            by_project.setdefault(task.project_id, []).append(task)
        async with self.api.client() as api:
            parts = await asyncio.gather(*(self._guarded(api, pid, items) for pid, items in by_project.items()))
        return {key: value for part in parts for key, value in part.items()}

    async def _guarded(self, api: ClaimXApiClient, project_id: str, tasks: list[ClaimXDownloadTask]) -> Refreshed:
        """One project's answer; an answer that breaks the code fails that project's tasks only."""
        outcome = await guarded_async("refresh media links", self._project, api, project_id, tasks)
        if isinstance(outcome, RejectedRecord):
            return {task.key: failure_of(outcome) for task in tasks}
        return outcome

    @staticmethod
    async def _project(api: ClaimXApiClient, project_id: str, tasks: list[ClaimXDownloadTask]) -> Refreshed:
        try:
            listing = found(await api.get_project_media(project_id), f"project {project_id}")
        except ApiError as error:
            return {task.key: error.failure for task in tasks}
        media = {m.media_id: m for m in listing}
        renewed: Refreshed = {}
        for task in tasks:
            item = media.get(task.media_id)
            renewed[task.key] = (
                task.model_copy(
                    update={
                        "download_url": item.download_url,
                        "expires_at": item.url_expires_at,
                        "file_name": item.file_name,
                        "file_type": item.file_type,
                    }
                )
                if item is not None
                else TaskFailure(
                    FailureCategory.PERMANENT, "not_found", f"media {task.media_id} no longer in project {project_id}"
                )
            )
        return renewed
