"""Streaming attachment downloads over aiohttp: pooled connections, bounded concurrency,
connect/read timeouts, an overall deadline per file, a byte budget for temporary files, a
circuit breaker per host, and every failure classified.

A body is streamed in chunks to a temporary file while its SHA-256 is computed, so memory
stays flat whatever the file size. Nothing is fetched before the URL, extension and presigned
expiry pass; redirects are followed by hand so every hop is checked again, and the resolver
refuses non-public addresses on every connection. The request asks for the identity encoding;
a host that compresses anyway is decompressed, within the size limit.
"""

from __future__ import annotations

import asyncio
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Optional

import aiohttp
import dagster as dg

from pipeline_defs.lib.attachments.bodies import (
    DiskBudget,
    DownloadResult,
    NoRoom,
    TooLarge,
    permanent,
    stream_to_spool,
    transient,
)
from pipeline_defs.lib.attachments.circuit_breaker import CircuitBreakers
from pipeline_defs.lib.attachments.file_types import WrongFileType, check_extension
from pipeline_defs.lib.attachments.url_safety import (
    BlockedAddress,
    BlockedUrl,
    CheckedUrl,
    SafeResolver,
    UrlPolicy,
    check_url,
    file_extension,
    follow_redirect,
    normalised_host,
    presigned_expiry,
    safe_file_name,
)
from pipeline_defs.lib.ingest.failures import FailureCategory, TaskFailure, http_failure
from pipeline_defs.lib.settings import DownloadSettings

REDIRECT_STATUSES = {301, 302, 303, 307, 308}


def url_policy(settings: DownloadSettings) -> UrlPolicy:
    return UrlPolicy(
        allowed_hosts=tuple(normalised_host(h) for h in settings.allowed_hosts),
        allow_http=settings.allow_http,
        allowed_ports=tuple(settings.allowed_ports),
        loopback_hosts=tuple(normalised_host(h) for h in settings.loopback_hosts),
        extra_hosts={normalised_host(h): ip for h, ip in settings.extra_hosts.items()},
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
        self.budget = DiskBudget(settings.temp_disk_bytes, wait_s=settings.read_timeout_s)
        self._allowed_extensions = frozenset(e.lower() for e in settings.allowed_extensions)
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._session: Optional[aiohttp.ClientSession] = None

    async def __aenter__(self) -> AttachmentDownloader:
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
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            trust_env=False,
            headers={"Accept-Encoding": "identity"},
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
            return permanent("blocked_url", str(exc))
        except WrongFileType as exc:
            return permanent("wrong_file_type", str(exc))
        expiry = presigned_expiry(url)
        if expiry is not None and expiry <= datetime.now(UTC):
            return permanent("expired_link", f"presigned URL expired at {expiry.isoformat()}")
        if not self.breakers.allow(checked.host):
            return TaskFailure(FailureCategory.CIRCUIT_OPEN, "circuit_open", f"circuit for {checked.host} is open")
        async with self._slots:
            try:
                async with asyncio.timeout(self.settings.download_deadline_s):
                    result = await self._fetch(checked, file_name)
            except TimeoutError:
                result = transient("deadline_exceeded", f"not done within {self.settings.download_deadline_s:.0f} s")
        if isinstance(result, TaskFailure) and result.category is FailureCategory.TRANSIENT:
            self.breakers.record_failure(checked.host)
        else:
            self.breakers.record_success(checked.host)
        return result

    async def _fetch(self, checked: CheckedUrl, file_name: str) -> DownloadResult:
        assert self._session is not None, "use AttachmentDownloader as an async context manager"
        try:
            for _ in range(self.settings.max_redirects + 1):
                async with self._session.get(checked.url, allow_redirects=False) as response:
                    if response.status in REDIRECT_STATUSES:
                        location = response.headers.get("Location")
                        if not location:
                            return permanent("bad_redirect", "redirect without Location")
                        checked = follow_redirect(checked, location, self.policy)
                        continue
                    if response.status != 200:
                        return await _http_failure(response)
                    file_name = file_name or _response_file_name(response)
                    extension = file_extension(file_name)
                    check_extension(extension, self._allowed_extensions)
                    return await stream_to_spool(response, file_name, extension, self.settings, self.budget, self.temp_dir)
            return permanent("too_many_redirects", "redirect limit reached")
        except BlockedUrl as exc:
            return permanent("blocked_redirect", str(exc))
        except WrongFileType as exc:
            return permanent("wrong_file_type", str(exc))
        except TooLarge as exc:
            return permanent("too_large", str(exc))
        except NoRoom as exc:
            return transient("temp_disk_busy", str(exc))
        except zlib.error:
            return permanent("bad_encoding", "compressed body does not decompress")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedAddress):
                return permanent("blocked_address", str(exc.os_error))
            if isinstance(exc, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)):
                return permanent("ssl_error", type(exc).__name__)
            return transient("connection_error", type(exc).__name__)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return transient("timeout", "connect or read timed out")
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            return transient("connection_error", type(exc).__name__)
        except aiohttp.InvalidURL as exc:
            return permanent("invalid_url", type(exc).__name__)
        except aiohttp.ClientError as exc:
            # Whatever else the client refuses (an answer that is not HTTP, a broken header): the
            # host may be mid-deploy, so it is retried, and dead-lettered if it stays that way.
            # The exception's text names the URL, which may carry a presigned signature.
            return transient("protocol_error", type(exc).__name__)


def _response_file_name(response: aiohttp.ClientResponse) -> str:
    """For URLs without a file name (``/download?id=1``): Content-Disposition, else the
    final URL after redirects."""
    try:
        disposition = response.content_disposition
    except ValueError:
        disposition = None
    if disposition is not None and disposition.filename:
        return safe_file_name(disposition.filename)
    return safe_file_name(response.url.raw_path)


async def _http_failure(response: aiohttp.ClientResponse) -> TaskFailure:
    """By status; a 401/403 whose body says the link expired (S3's "Request has expired") is
    an expired link, which a refresh of the URL can mend."""
    if response.status in (401, 403):
        snippet = (await response.content.read(2048)).decode("utf-8", "replace").lower()
        if "expired" in snippet:
            return permanent("expired_link", f"HTTP {response.status}: link expired")
    return http_failure(response.status, response.headers.get("Retry-After"))


class AttachmentHttpResource(dg.ConfigurableResource):
    """The attachment hosts, as seen through the downloader's safety rules."""

    settings: DownloadSettings

    def downloader(self, temp_dir: Path) -> AttachmentDownloader:
        return AttachmentDownloader(self.settings, temp_dir)
