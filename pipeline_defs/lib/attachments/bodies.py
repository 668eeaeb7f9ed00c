"""Response bodies on their way to a temporary file: a byte budget for the run's temporary disk,
decompression within the size limit, and the downloaded file handed to the upload."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Optional, Union

import aiohttp

from pipeline_defs.lib.attachments.file_types import MAGIC_BYTES_NEEDED, check_content
from pipeline_defs.lib.ingest.failures import FailureCategory, TaskFailure
from pipeline_defs.lib.ingest.guard import InfrastructureError
from pipeline_defs.lib.settings import DownloadSettings

_DECOMPRESSORS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


def permanent(code: str, detail: str) -> TaskFailure:
    return TaskFailure(FailureCategory.PERMANENT, code, detail)


def transient(code: str, detail: str) -> TaskFailure:
    return TaskFailure(FailureCategory.TRANSIENT, code, detail)


class TempStorageUnavailable(InfrastructureError):
    """The temporary directory could not take a download (disk full, not writable)."""


class TooLarge(Exception):
    pass


class NoRoom(Exception):
    pass


@dataclass
class DiskBudget:
    """Bytes the run's downloads may hold in temporary files at once. A download waits for
    room up to ``wait_s``; one that cannot get it gives way (a transient failure) so two
    half-done downloads never wait for each other forever."""

    limit: int
    wait_s: float
    used: int = 0
    _freed: asyncio.Event = field(default_factory=asyncio.Event)

    async def reserve(self, size: int) -> None:
        if size > self.limit:
            raise TooLarge(f"{size} bytes exceed the temporary disk budget of {self.limit}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while self.used + size > self.limit:
            self._freed.clear()
            try:
                await asyncio.wait_for(self._freed.wait(), max(deadline - loop.time(), 0))
            except TimeoutError:
                raise NoRoom(f"no room for {size} more bytes in the temporary disk budget") from None
        self.used += size

    def release(self, size: int) -> None:
        self.used -= size
        self._freed.set()


@dataclass(frozen=True)
class DownloadedFile:
    content: IO[bytes]  # positioned at 0; in memory up to spool_bytes, on disk beyond
    file_name: str
    extension: str
    size: int
    sha256: str
    content_type: str
    downloaded_at: datetime
    budget: Optional[DiskBudget] = None
    reserved: int = 0

    def discard(self) -> None:
        self.content.close()  # a spooled temporary file: closing deletes it
        if self.budget is not None:
            self.budget.release(self.reserved)


DownloadResult = Union[DownloadedFile, TaskFailure]


async def stream_to_spool(
    response: aiohttp.ClientResponse,
    file_name: str,
    extension: str,
    settings: DownloadSettings,
    budget: DiskBudget,
    temp_dir: Path,
) -> DownloadResult:
    """The body into a spooled temporary file, checked (type, size, completeness) and hashed on the way."""
    limit = settings.max_file_bytes
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity", *_DECOMPRESSORS):
        return permanent("unsupported_encoding", f"Content-Encoding {encoding[:40]!r} not supported")
    decompressor = zlib.decompressobj(_DECOMPRESSORS[encoding]) if encoding in _DECOMPRESSORS else None
    announced = response.content_length
    if announced is not None and decompressor is None and announced > limit:
        raise TooLarge(f"{announced} bytes announced, limit {limit}")
    content_type = response.headers.get("Content-Type", "")
    # Small files stay in memory; past spool_bytes the spool moves to a temporary file, so
    # memory is bounded by concurrency x spool_bytes whatever the file sizes, and disk by
    # the byte budget.
    reserved = 0
    step = settings.chunk_bytes * 8
    out = tempfile.SpooledTemporaryFile(max_size=settings.spool_bytes, mode="w+b", dir=str(temp_dir))  # noqa: SIM115 - handed on in DownloadedFile
    digest, size, received, head, checked = hashlib.sha256(), 0, 0, b"", False
    try:
        async for raw in response.content.iter_chunked(settings.chunk_bytes):
            received += len(raw)
            chunk = _inflate(decompressor, raw, limit - size) if decompressor else raw
            if not checked:
                head += chunk[: MAGIC_BYTES_NEEDED - len(head)]
                if len(head) >= MAGIC_BYTES_NEEDED:
                    check_content(extension, content_type, head)
                    checked = True
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"more than {limit} bytes")
            while size > reserved:
                await budget.reserve(step)
                reserved += step
            digest.update(chunk)
            _write(out, chunk)
        if decompressor is not None:
            tail = decompressor.flush()
            size += len(tail)
            if size > limit:
                raise TooLarge(f"more than {limit} bytes")
            head += tail[: MAGIC_BYTES_NEEDED - len(head)]
            digest.update(tail)
            _write(out, tail)
        if not checked:
            check_content(extension, content_type, head)
        if announced is not None and received != announced:
            out.close()
            budget.release(reserved)
            return transient("truncated", f"{received} of {announced} bytes")
    except BaseException:
        out.close()
        budget.release(reserved)
        raise
    out.seek(0)
    return DownloadedFile(
        content=out,
        file_name=file_name,
        extension=extension,
        size=size,
        sha256=digest.hexdigest(),
        content_type=content_type.split(";", 1)[0].strip()[:200] or "application/octet-stream",
        downloaded_at=datetime.now(UTC),
        budget=budget,
        reserved=reserved,
    )


def _inflate(decompressor: zlib._Decompress, raw: bytes, room: int) -> bytes:
    """Decompress ``raw``, never producing more than ``room`` + 1 bytes (a zip bomb stops here)."""
    out = decompressor.decompress(raw, max(room, 0) + 1)
    if decompressor.unconsumed_tail:
        raise TooLarge("decompressed body exceeds the size limit")
    return out


def _write(out: IO[bytes], chunk: bytes) -> None:
    try:
        out.write(chunk)
    except OSError as exc:
        raise TempStorageUnavailable(f"temporary directory cannot take downloads: {exc.strerror}") from exc
