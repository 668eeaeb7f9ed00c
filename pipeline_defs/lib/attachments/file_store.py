"""Where attachments are uploaded: OneLake Files (Blob API, Azure identity), any Blob account
(Azurite in tests), or a local folder, the embedded default. One interface for all three."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Optional
from urllib.parse import urlsplit

import dagster as dg

from pipeline_defs.lib.ingest.guard import InfrastructureError
from pipeline_defs.lib.settings import StorageSettings

ONELAKE_DFS_HOST = "onelake.dfs.fabric.microsoft.com"
ONELAKE_BLOB_URL = "https://onelake.blob.fabric.microsoft.com"
INLINE_WRITE_BYTES = 1024 * 1024


class StorageUnavailable(InfrastructureError):
    """Uploading failed for a reason no single attachment is to blame for; the run fails and
    Dagster's retry policy runs it again."""


@dataclass(frozen=True)
class BlobLocation:
    account_url: str
    container: str
    prefix: str


def blob_location(storage: StorageSettings) -> Optional[BlobLocation]:
    """Parse ``files_root``; ``None`` means a local folder."""
    parts = urlsplit(storage.files_root)
    if parts.scheme == "az":
        account_url = storage.azure_endpoint or f"https://{storage.azure_account_name}.blob.core.windows.net"
        return BlobLocation(account_url, parts.netloc, parts.path.strip("/"))
    if parts.scheme == "abfss":
        container, _, host = parts.netloc.partition("@")
        if host == ONELAKE_DFS_HOST:
            account_url = ONELAKE_BLOB_URL
        else:
            account_url = storage.azure_endpoint or f"https://{host.split('.')[0]}.blob.core.windows.net"
        return BlobLocation(account_url, container, parts.path.strip("/"))
    return None


class FileStore(ABC):
    @abstractmethod
    async def upload(self, content: IO[bytes], size: int, blob_path: str, content_type: str) -> None:
        """Store ``size`` bytes read from ``content`` at ``blob_path``, overwriting: uploads
        are idempotent."""

    @abstractmethod
    async def size_of(self, blob_path: str) -> Optional[int]:
        """The stored size, or ``None`` if nothing is there."""

    @abstractmethod
    async def read(self, blob_path: str) -> bytes:
        """The whole blob (small ones only: claim checks)."""

    @abstractmethod
    def uri(self, blob_path: str) -> str: ...


class LocalFileStore(FileStore):
    def __init__(self, root: Path):
        self.root = root.resolve()

    def _target(self, blob_path: str) -> Path:
        # Lexical normalisation is enough (blob paths never contain links); resolve() would
        # stat every component of every upload.
        target = Path(os.path.normpath(self.root / blob_path))
        if self.root not in target.parents:
            raise ValueError(f"blob path {blob_path!r} escapes the files root")
        return target

    async def upload(self, content: IO[bytes], size: int, blob_path: str, content_type: str) -> None:
        target = self._target(blob_path)

        def copy() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".uploading")
            with partial.open("wb") as out:
                shutil.copyfileobj(content, out, 1024 * 1024)
            os.replace(partial, target)  # readers never see half a file

        try:
            if size <= INLINE_WRITE_BYTES:
                copy()  # a small write costs less than the hop to a worker thread and back
            else:
                await asyncio.to_thread(copy)
        except OSError as exc:
            raise StorageUnavailable(f"local files root not writable: {exc}") from exc

    async def size_of(self, blob_path: str) -> Optional[int]:
        target = self._target(blob_path)
        return target.stat().st_size if target.exists() else None

    async def read(self, blob_path: str) -> bytes:
        try:
            return self._target(blob_path).read_bytes()
        except OSError as exc:
            raise StorageUnavailable(f"local files root not readable: {exc}") from exc

    def uri(self, blob_path: str) -> str:
        return self._target(blob_path).as_uri()


class BlobFileStore(FileStore):
    def __init__(self, location: BlobLocation, container_client: object):
        self.location = location
        self._container = container_client

    def _name(self, blob_path: str) -> str:
        return f"{self.location.prefix}/{blob_path}" if self.location.prefix else blob_path

    async def upload(self, content: IO[bytes], size: int, blob_path: str, content_type: str) -> None:
        from azure.storage.blob import ContentSettings

        # A small file goes as bytes: the SDK reads a file object through an executor thread.
        data = content.read() if size <= INLINE_WRITE_BYTES else content
        try:
            await self._container.upload_blob(  # type: ignore[attr-defined]
                self._name(blob_path),
                data,
                length=size,
                overwrite=True,
                max_concurrency=4,
                content_settings=ContentSettings(content_type=content_type),
            )
        except Exception as exc:  # any SDK or transport error: the store, not the file
            raise StorageUnavailable(f"upload to {self.location.account_url} failed: {type(exc).__name__}") from exc

    async def size_of(self, blob_path: str) -> Optional[int]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            properties = await self._container.get_blob_client(self._name(blob_path)).get_blob_properties()  # type: ignore[attr-defined]
        except ResourceNotFoundError:
            return None
        return properties.size

    async def read(self, blob_path: str) -> bytes:
        try:
            downloader = await self._container.download_blob(self._name(blob_path))  # type: ignore[attr-defined]
            return await downloader.readall()
        except Exception as exc:  # missing or unreachable: either way not this record's fault
            raise StorageUnavailable(f"read from {self.location.account_url} failed: {type(exc).__name__}") from exc

    def uri(self, blob_path: str) -> str:
        return f"{self.location.account_url}/{self.location.container}/{self._name(blob_path)}"


class FileStoreResource(dg.ConfigurableResource):
    """The lakehouse ``Files`` area. ``azure_account_key`` is bound with ``dg.EnvVar`` for
    shared-key accounts (Azurite); otherwise azure-identity's ``DefaultAzureCredential``."""

    storage: StorageSettings
    azure_account_key: Optional[str] = None

    def put_bytes(self, blob_path: str, data: bytes) -> None:
        """Store ``data`` (a claim check) from synchronous code."""

        async def put() -> None:
            async with self.open() as store:
                await store.upload(io.BytesIO(data), len(data), blob_path, "application/json")

        asyncio.run(put())

    def get_bytes(self, blob_path: str) -> bytes:
        async def get() -> bytes:
            async with self.open() as store:
                return await store.read(blob_path)

        return asyncio.run(get())

    @asynccontextmanager
    async def open(self) -> AsyncIterator[FileStore]:
        location = blob_location(self.storage)
        if location is None:
            yield LocalFileStore(Path(self.storage.files_root).expanduser())
            return
        from azure.storage.blob.aio import BlobServiceClient, ExponentialRetry

        # A short SDK retry rides out a blip; a longer outage fails the step quickly and
        # Dagster's RetryPolicy takes over, instead of a run hanging inside the SDK.
        retry = ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=2)
        if self.azure_account_key:
            credential = {"account_name": self.storage.azure_account_name or "", "account_key": self.azure_account_key}
            async with BlobServiceClient(location.account_url, credential=credential, retry_policy=retry) as service:
                yield BlobFileStore(location, service.get_container_client(location.container))
        else:
            from azure.identity.aio import DefaultAzureCredential

            async with (
                DefaultAzureCredential() as identity,
                BlobServiceClient(location.account_url, credential=identity, retry_policy=retry) as service,
            ):
                yield BlobFileStore(location, service.get_container_client(location.container))
