"""Download work items: a retryable task that names a URL and where its file goes."""

from __future__ import annotations

from abc import abstractmethod

from pipeline_defs.lib.ingest.tasks import RetryableTask


class AttachmentTask(RetryableTask):
    """One attachment to download."""

    @property
    @abstractmethod
    def url(self) -> str: ...

    @abstractmethod
    def blob_path(self, file_name: str) -> str: ...
