"""Is a URL safe to fetch? Checked before any byte is fetched, and again for every redirect
and every connection (the resolver refuses non-public addresses, so DNS rebinding and hosts
that resolve to private ranges are caught where the socket is opened)."""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Mapping, Optional
from urllib.parse import parse_qsl, unquote, urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

MAX_URL_LENGTH = 4096
_FORBIDDEN_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


class BlockedUrl(Exception):
    """The URL must not be fetched; the reason never includes the URL's query string."""


class BlockedAddress(OSError):
    """A host resolved to an address the pipeline must not connect to."""


@dataclass(frozen=True)
class UrlPolicy:
    allowed_hosts: tuple[str, ...]  # a host also allows its subdomains
    allow_http: bool = False
    allowed_ports: tuple[int, ...] = (443,)  # empty: any port
    loopback_hosts: tuple[str, ...] = ()  # test only: hosts that may resolve to loopback
    extra_hosts: Mapping[str, str] = field(default_factory=dict)  # like curl --resolve


@dataclass(frozen=True)
class CheckedUrl:
    url: str
    scheme: str
    host: str  # IDNA (ASCII), lower case, no trailing dot
    port: int
    path: str


def check_url(url: str, policy: UrlPolicy) -> CheckedUrl:
    if len(url) > MAX_URL_LENGTH:
        raise BlockedUrl("URL too long")
    if _FORBIDDEN_URL_CHARS.search(url):
        raise BlockedUrl("URL contains whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BlockedUrl(f"unparseable URL: {exc}") from None
    schemes = ("https", "http") if policy.allow_http else ("https",)
    if parts.scheme not in schemes:
        raise BlockedUrl(f"scheme {parts.scheme!r} not allowed")
    if "@" in parts.netloc or parts.username or parts.password:
        raise BlockedUrl("credentials in URL")
    if _is_ip_literal((parts.hostname or "").rstrip(".")):
        raise BlockedUrl("IP address literal instead of a host name")
    host = _ascii_host(parts.hostname or "")
    if not any(host == allowed or host.endswith("." + allowed) for allowed in policy.allowed_hosts):
        raise BlockedUrl(f"host {host!r} not in the allowlist")
    port = port or (443 if parts.scheme == "https" else 80)
    if policy.allowed_ports and port not in policy.allowed_ports:
        raise BlockedUrl(f"port {port} not allowed")
    return CheckedUrl(url=url, scheme=parts.scheme, host=host, port=port, path=parts.path)


def _ascii_host(host: str) -> str:
    if not host or "%" in host:
        raise BlockedUrl("missing or percent-encoded host")
    host = unicodedata.normalize("NFKC", host).rstrip(".").lower()
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise BlockedUrl("host is not a valid internationalised domain name") from None
    if not re.fullmatch(r"[a-z0-9.-]+", ascii_host) or ".." in ascii_host:
        raise BlockedUrl("host has characters a DNS name cannot have")
    return ascii_host


def _is_ip_literal(host: str) -> bool:
    """Dotted, integer, octal and hex IPv4 forms (what inet_aton accepts) and IPv6."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        socket.inet_aton(host)
        return True
    except OSError:
        return False


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved)


class SafeResolver(AbstractResolver):
    """aiohttp resolver that refuses private, loopback, link-local and metadata addresses."""

    def __init__(self, policy: UrlPolicy):
        self._policy = policy
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        pinned = self._policy.extra_hosts.get(host)
        if pinned is not None:
            results: list[ResolveResult] = [
                {
                    "hostname": host,
                    "host": pinned,
                    "port": port,
                    "family": socket.AF_INET6 if ":" in pinned else socket.AF_INET,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            ]
        else:
            results = await self._inner.resolve(host, port, family)
        for result in results:
            address = result["host"]
            loopback_ok = host in self._policy.loopback_hosts and ipaddress.ip_address(address).is_loopback
            if not (loopback_ok or is_public_address(address)):
                raise BlockedAddress(f"{host} resolves to non-public address {address}")
        return results

    async def close(self) -> None:
        await self._inner.close()


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(url_path: str, fallback: str = "attachment") -> str:
    """The last path segment, decoded, reduced to ``[A-Za-z0-9._-]`` and never a path:
    ``..%2F..%2Fetc%2Fpasswd.pdf`` becomes ``etc_passwd.pdf``."""
    decoded = unquote(unquote(url_path))
    name = re.split(r"[/\\]", decoded)[-1]
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    name = _SAFE_NAME.sub("_", name).strip("._-")
    name = re.sub(r"_+", "_", name)[-120:].lstrip("._-")
    return name or fallback


def safe_path_segment(value: Optional[str], fallback: str = "unknown") -> str:
    cleaned = _SAFE_NAME.sub("_", value or "").strip("._-")
    return cleaned[:120] or fallback


def file_extension(file_name: str) -> str:
    return file_name.rsplit(".", 1)[-1].lower() if "." in file_name else ""


def presigned_expiry(url: str) -> Optional[datetime]:
    """When a presigned URL stops working: S3/GCS SigV4 (``X-Amz-Date``+``X-Amz-Expires``,
    ``X-Goog-*``), S3 SigV2/CloudFront (``Expires``) and Azure SAS (``se``)."""
    query = {k.lower(): v for k, v in parse_qsl(urlsplit(url).query)}
    for prefix in ("x-amz-", "x-goog-"):
        signed, lifetime = query.get(prefix + "date"), query.get(prefix + "expires")
        if signed and lifetime and lifetime.isdigit():
            try:
                start = datetime.strptime(signed, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
            except ValueError:
                return None
            return start + timedelta(seconds=int(lifetime))
    if query.get("expires", "").isdigit():
        return datetime.fromtimestamp(int(query["expires"]), timezone.utc)
    if "se" in query and "sig" in query:
        try:
            return datetime.fromisoformat(query["se"].replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def redacted(url: str) -> str:
    """Scheme, host and path only: query strings carry signatures and tokens."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
