"""Streaming attachment downloads over aiohttp: pooled connections, bounded concurrency,
connect/read timeouts, a circuit breaker per host, and every failure classified.

A body is streamed in chunks to a temporary file while its SHA-256 is computed, so memory
stays flat whatever the file size. Nothing is fetched before the URL, extension and presigned
expiry pass; redirects are followed by hand so every hop is checked again, and the resolver
refuses non-public addresses on every connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Optional, Union
from urllib.parse import urljoin

import aiohttp
import dagster as dg

from pipeline_defs.lib.circuit_breaker import CircuitBreakers
from pipeline_defs.lib.failures import FailureCategory, TaskFailure, http_failure
from pipeline_defs.lib.file_types import MAGIC_BYTES_NEEDED, WrongFileType, check_content, check_extension
from pipeline_defs.lib.settings import DownloadSettings
from pipeline_defs.lib.url_safety import (
    BlockedAddress,
    BlockedUrl,
    SafeResolver,
    UrlPolicy,
    check_url,
    file_extension,
    presigned_expiry,
    safe_file_name,
)

REDIRECT_STATUSES = {301, 302, 303, 307, 308}


@dataclass(frozen=True)
class DownloadedFile:
    content: BinaryIO  # positioned at 0; in memory up to spool_bytes, on disk beyond
    file_name: str
    extension: str
    size: int
    sha256: str
    content_type: str
    downloaded_at: datetime

    def discard(self) -> None:
        self.content.close()  # a spooled temporary file: closing deletes it


DownloadResult = Union[DownloadedFile, TaskFailure]


class _TooLarge(Exception):
    pass


def url_policy(settings: DownloadSettings) -> UrlPolicy:
    return UrlPolicy(
        allowed_hosts=tuple(h.lower().rstrip(".") for h in settings.allowed_hosts),
        allow_http=settings.allow_http,
        allowed_ports=tuple(settings.allowed_ports),
        loopback_hosts=tuple(settings.loopback_hosts),
        extra_hosts=dict(settings.extra_hosts),
    )


class AttachmentDownloader:
    """``async with AttachmentDownloader(settings, temp_dir) as d: await d.download(url)``"""

    def __init__(self, settings: DownloadSettings, temp_dir: Path):
        self.settings = settings
        self.policy = url_policy(settings)
        self.temp_dir = temp_dir
        self.breakers = CircuitBreakers(
            failure_threshold=settings.circuit_failure_threshold,
            reset_timeout_s=settings.circuit_reset_s,
        )
        self._allowed_extensions = frozenset(e.lower() for e in settings.allowed_extensions)
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._session: Optional[aiohttp.ClientSession] = None

    async def __aenter__(self) -> "AttachmentDownloader":
        connector = aiohttp.TCPConnector(
            limit=self.settings.concurrency,
            limit_per_host=self.settings.concurrency,
            resolver=SafeResolver(self.policy),
            ttl_dns_cache=60,
        )
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.settings.connect_timeout_s,
            sock_read=self.settings.read_timeout_s,
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False, trust_env=False
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def download(self, url: str) -> DownloadResult:
        try:
            checked = check_url(url, self.policy)
            file_name = safe_file_name(checked.path)
            if file_extension(file_name):
                check_extension(file_extension(file_name), self._allowed_extensions)
            else:
                file_name = ""  # named by the final response (Content-Disposition or URL)
        except BlockedUrl as exc:
            return TaskFailure(FailureCategory.PERMANENT, "blocked_url", str(exc))
        except WrongFileType as exc:
            return TaskFailure(FailureCategory.PERMANENT, "wrong_file_type", str(exc))
        expiry = presigned_expiry(url)
        if expiry is not None and expiry <= datetime.now(timezone.utc):
            return TaskFailure(
                FailureCategory.PERMANENT, "expired_link", f"presigned URL expired at {expiry.isoformat()}"
            )
        if not self.breakers.allow(checked.host):
            return TaskFailure(
                FailureCategory.CIRCUIT_OPEN, "circuit_open", f"circuit for {checked.host} is open"
            )
        async with self._slots:
            result = await self._fetch(url, file_name)
        if isinstance(result, TaskFailure) and result.category is FailureCategory.TRANSIENT:
            self.breakers.record_failure(checked.host)
        else:
            self.breakers.record_success(checked.host)
        return result

    async def _fetch(self, url: str, file_name: str) -> DownloadResult:
        assert self._session is not None, "use AttachmentDownloader as an async context manager"
        try:
            for _ in range(self.settings.max_redirects + 1):
                async with self._session.get(url, allow_redirects=False) as response:
                    if response.status in REDIRECT_STATUSES:
                        location = response.headers.get("Location")
                        if not location:
                            return TaskFailure(FailureCategory.PERMANENT, "bad_redirect", "redirect without Location")
                        url = urljoin(url, location)
                        check_url(url, self.policy)
                        continue
                    if response.status != 200:
                        return await _http_failure(response)
                    file_name = file_name or _response_file_name(response)
                    extension = file_extension(file_name)
                    check_extension(extension, self._allowed_extensions)
                    return await self._stream(response, file_name, extension)
            return TaskFailure(FailureCategory.PERMANENT, "too_many_redirects", "redirect limit reached")
        except BlockedUrl as exc:
            return TaskFailure(FailureCategory.PERMANENT, "blocked_redirect", str(exc))
        except WrongFileType as exc:
            return TaskFailure(FailureCategory.PERMANENT, "wrong_file_type", str(exc))
        except _TooLarge as exc:
            return TaskFailure(FailureCategory.PERMANENT, "too_large", str(exc))
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedAddress):
                return TaskFailure(FailureCategory.PERMANENT, "blocked_address", str(exc.os_error))
            if isinstance(exc, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)):
                return TaskFailure(FailureCategory.PERMANENT, "ssl_error", type(exc).__name__)
            return TaskFailure(FailureCategory.TRANSIENT, "connection_error", type(exc).__name__)
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            return TaskFailure(FailureCategory.TRANSIENT, "timeout", "connect or read timed out")
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            return TaskFailure(FailureCategory.TRANSIENT, "connection_error", type(exc).__name__)
        except aiohttp.InvalidURL as exc:
            return TaskFailure(FailureCategory.PERMANENT, "invalid_url", type(exc).__name__)
        except aiohttp.ClientError as exc:
            # Whatever else the client refuses (an answer that is not HTTP, a broken header): the
            # host may be mid-deploy, so it is retried, and dead-lettered if it stays that way.
            # The exception's text names the URL, which may carry a presigned signature.
            return TaskFailure(FailureCategory.TRANSIENT, "protocol_error", type(exc).__name__)

    async def _stream(
        self, response: aiohttp.ClientResponse, file_name: str, extension: str
    ) -> DownloadResult:
        limit = self.settings.max_file_bytes
        if response.content_length is not None and response.content_length > limit:
            raise _TooLarge(f"{response.content_length} bytes announced, limit {limit}")
        content_type = response.headers.get("Content-Type", "")
        # Small files stay in memory; past spool_bytes the spool moves to a temporary file, so
        # memory is bounded by concurrency x spool_bytes whatever the file sizes.
        out = tempfile.SpooledTemporaryFile(max_size=self.settings.spool_bytes, dir=self.temp_dir)
        digest, size, head, checked = hashlib.sha256(), 0, b"", False
        try:
            async for chunk in response.content.iter_chunked(self.settings.chunk_bytes):
                if not checked:
                    head += chunk[: MAGIC_BYTES_NEEDED - len(head)]
                    if len(head) >= MAGIC_BYTES_NEEDED:
                        check_content(extension, content_type, head)
                        checked = True
                size += len(chunk)
                if size > limit:
                    raise _TooLarge(f"more than {limit} bytes")
                digest.update(chunk)
                out.write(chunk)
            if not checked:
                check_content(extension, content_type, head)
            if response.content_length is not None and size != response.content_length:
                out.close()
                return TaskFailure(FailureCategory.TRANSIENT, "truncated", f"{size} of {response.content_length} bytes")
        except BaseException:
            out.close()
            raise
        out.seek(0)
        return DownloadedFile(
            content=out,
            file_name=file_name,
            extension=extension,
            size=size,
            sha256=digest.hexdigest(),
            content_type=content_type.split(";", 1)[0].strip() or "application/octet-stream",
            downloaded_at=datetime.now(timezone.utc),
        )


def _response_file_name(response: aiohttp.ClientResponse) -> str:
    """For URLs without a file name (``/download?id=1``): Content-Disposition, else the
    final URL after redirects."""
    disposition = response.content_disposition
    if disposition is not None and disposition.filename:
        return safe_file_name(disposition.filename)
    return safe_file_name(response.url.path)


async def _http_failure(response: aiohttp.ClientResponse) -> TaskFailure:
    """By status; a 401/403 whose body says the link expired (S3's "Request has expired") is
    an expired link, which a refresh of the URL can mend."""
    if response.status in (401, 403):
        snippet = (await response.content.read(2048)).decode("utf-8", "replace").lower()
        if "expired" in snippet:
            return TaskFailure(FailureCategory.PERMANENT, "expired_link", f"HTTP {response.status}: link expired")
    return http_failure(response.status, response.headers.get("Retry-After"))


class AttachmentHttpResource(dg.ConfigurableResource):
    """The attachment hosts, as seen through the downloader's safety rules."""

    settings: DownloadSettings

    def downloader(self, temp_dir: Path) -> AttachmentDownloader:
        return AttachmentDownloader(self.settings, temp_dir)
