"""Is a URL safe to fetch? Checked before any byte is fetched, and again for every redirect
and every connection (the resolver refuses non-public addresses, so DNS rebinding and hosts
that resolve to private ranges are caught where the socket is opened).

The host is normalised once, by the same parser (yarl, UTS-46) that makes the request, and the
request goes to the URL this check returns: what is checked is what is fetched.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Optional
from urllib.parse import parse_qsl, unquote, urlsplit

import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from pipeline_defs.lib.validation.timestamps import LATEST, ascii_int, clamp_after, from_epoch_s, parse_iso

# Real presigned links (SigV4 with a session token, Azure SAS with many fields) run to 2,000
# characters and more; 8 KiB is what most servers accept in a request line.
MAX_URL_LENGTH = 8192
_FORBIDDEN_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")


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
    url: yarl.URL  # what the request goes to, host normalised
    host: str  # IDNA (ASCII), lower case, no trailing dot
    port: int
    path: str  # percent-encoded, as sent


def check_url(url: str, policy: UrlPolicy) -> CheckedUrl:
    if len(url) > MAX_URL_LENGTH:
        raise BlockedUrl(f"URL longer than {MAX_URL_LENGTH} characters")
    if _FORBIDDEN_URL_CHARS.search(url):
        raise BlockedUrl("URL contains whitespace, control or bidi characters, or backslashes")
    try:
        parsed = yarl.URL(url)
        port = parsed.port
        host = parsed.raw_host or ""
    except (ValueError, TypeError, UnicodeError):
        raise BlockedUrl("unparseable URL") from None
    return _checked(parsed, host, port, policy)


def follow_redirect(current: CheckedUrl, location: str, policy: UrlPolicy) -> CheckedUrl:
    """Where a redirect leads, checked like the first URL (relative locations resolved)."""
    if len(location) > MAX_URL_LENGTH or _FORBIDDEN_URL_CHARS.search(location):
        raise BlockedUrl("redirect location too long or with forbidden characters")
    try:
        target = current.url.join(yarl.URL(location))
    except (ValueError, TypeError, UnicodeError):
        raise BlockedUrl("unparseable redirect location") from None
    return check_url(str(target), policy)


def _checked(parsed: yarl.URL, host: str, port: Optional[int], policy: UrlPolicy) -> CheckedUrl:
    schemes = ("https", "http") if policy.allow_http else ("https",)
    if parsed.scheme not in schemes:
        raise BlockedUrl(f"scheme {parsed.scheme!r} not allowed")
    if parsed.raw_user is not None or parsed.raw_password is not None or "@" in (parsed.raw_authority or ""):
        raise BlockedUrl("credentials in URL")
    host = host.rstrip(".").lower()
    if _is_ip_literal(host):
        raise BlockedUrl("IP address literal instead of a host name")
    if not host or not re.fullmatch(r"[a-z0-9_.-]+", host) or ".." in host:
        raise BlockedUrl("host missing, percent-encoded or not a DNS name")
    if not any(host == allowed or host.endswith("." + allowed) for allowed in policy.allowed_hosts):
        raise BlockedUrl(f"host {host!r} not in the allowlist")
    port = port or (443 if parsed.scheme == "https" else 80)
    if policy.allowed_ports and port not in policy.allowed_ports:
        raise BlockedUrl(f"port {port} not allowed")
    return CheckedUrl(url=parsed.with_host(host), host=host, port=port, path=parsed.raw_path)


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
    except (OSError, ValueError):
        return False


def normalised_host(host: str) -> str:
    """A configured host name as the checks compare it (the allowlist may be written in Unicode)."""
    try:
        return (yarl.URL.build(scheme="http", host=host.strip().rstrip(".")).raw_host or "").lower()
    except (ValueError, TypeError, UnicodeError):
        raise ValueError(f"not a host name: {host!r}") from None


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

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
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
_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,10})$")


def safe_file_name(url_path: str, fallback: str = "attachment") -> str:
    """The last path segment, decoded, reduced to ``[A-Za-z0-9._-]`` and never a path:
    ``..%2F..%2Fetc%2Fpasswd.pdf`` becomes ``etc_passwd.pdf``. The extension survives a name
    with no ASCII in it: ``見積書.pdf`` becomes ``attachment.pdf``."""
    decoded = unquote(unquote(url_path, errors="replace"), errors="replace")
    name = unicodedata.normalize("NFKC", re.split(r"[/\\]", decoded)[-1])
    match = _EXTENSION.search(name)
    stem, extension = (name[: match.start()], match.group(1)) if match else (name, "")
    stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    stem = (
        re.sub(r"([_.])[_.]+", r"\1", _SAFE_NAME.sub("_", stem)).strip("._-")[-100:].lstrip("._-") or fallback
    )  # no ".." anywhere
    return f"{stem}.{extension}" if extension else stem


def safe_path_segment(value: Optional[str], fallback: str = "unknown") -> str:
    cleaned = _SAFE_NAME.sub("_", value or "").strip("._-")
    return cleaned[:120] or fallback


def file_extension(file_name: str) -> str:
    return file_name.rsplit(".", 1)[-1].lower() if "." in file_name else ""


def url_digest(url: str, length: int = 10) -> str:
    """A short, stable name for a URL: two attachments called ``report.pdf`` never share a blob."""
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def presigned_expiry(url: str) -> Optional[datetime]:
    """When a presigned URL stops working: S3/GCS SigV4 (``X-Amz-Date``+``X-Amz-Expires``,
    ``X-Goog-*``), S3 SigV2/CloudFront (``Expires``) and Azure SAS (``se``: a date, or a date
    and time, in UTC). An unreadable or absurd expiry is no expiry (the host decides); one past
    year 9999 is the end of year 9999."""
    try:
        query = {k.lower(): v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    except ValueError:
        return None
    for prefix in ("x-amz-", "x-goog-"):
        signed, lifetime = query.get(prefix + "date"), ascii_int(query.get(prefix + "expires", ""))
        if signed and lifetime is not None:
            try:
                start = datetime.strptime(signed, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            except ValueError:
                return None
            return clamp_after(start, lifetime)
    epoch = ascii_int(query.get("expires", ""))
    if epoch is not None:
        return from_epoch_s(epoch) or LATEST
    if "se" in query and "sig" in query:
        return parse_iso(query["se"])
    return None
