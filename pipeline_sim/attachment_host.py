"""An attachment host on 127.0.0.1 that behaves like the real ones, failures included.

    /files/<any>.<ext>              200, plausible bytes for the extension
    /big/<bytes>/<any>.<ext>        200, streamed without holding the body in memory
    /status/<code>/<any>            that status (404, 410, 500, 503, ...)
    /flaky/<n>/<any>.<ext>          503 for the first n requests of that path, then 200
    /slow/<seconds>/<any>.<ext>     headers now, body after <seconds> (read timeouts)
    /as/<content-type>/<any>.<ext>  200 with that content type (use %2F for the slash)
    /throttle/<seconds>/<any>       429 with Retry-After: <seconds>
    /expired/<any>                  403 "Request has expired", like S3
    /redirect?to=<url>              302 to <url>
    /garbage/<any>                  bytes that are not an HTTP response, then the connection closes
    /gzip/<any>.<ext>               the file, gzip-compressed, with Content-Encoding: gzip
    /bomb/<bytes>/<any>.<ext>       a few KB of gzip that inflate to <bytes> bytes
    /encoded/<encoding>/<any>.<ext> the file, labelled with Content-Encoding: <encoding>
    /drip/<seconds>/<any>.<ext>     headers now, then one byte every <seconds>
    /retry-after/<value>/<any>      503 with Retry-After: <value> (percent-decoded)
    /raw-redirect?to=<location>     302 with exactly that Location, however broken
    /loop/<any>                     302 to itself
    /long-header/<any>.<ext>        the file, with a 20 kB response header
    /short/<any>.<ext>              Content-Length promises more than the body holds
    /empty/<any>.<ext>              200, the right content type, no body
    /disposition/<any>?cd=<value>   a PDF named only by Content-Disposition: <value>

``fail(path, status)`` makes a path answer ``status`` until ``heal(path)``; ``outage(status)``
does it for every path until ``outage(None)``.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import ssl
import zlib
from collections import Counter
from typing import Optional
from urllib.parse import unquote

from aiohttp import web

from pipeline_sim.http_server import LocalHttpServer

MAGIC = {
    "pdf": (b"%PDF-1.7\n", "application/pdf"),
    "jpg": (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
    "jpeg": (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
    "png": (b"\x89PNG\r\n\x1a\n", "image/png"),
    "xml": (b'<?xml version="1.0"?>\n<estimate/>\n', "application/xml"),
    "mp4": (b"\x00\x00\x00\x18ftypmp42", "video/mp4"),
}
CHUNK = 1024 * 1024


def file_body(path: str, size: int) -> tuple[bytes, str]:
    """Deterministic content for a path: the right magic bytes, then filler to ``size``."""
    magic, content_type = _kind(path)
    seed = hashlib.sha256(path.encode()).digest()
    filler = (seed * (size // len(seed) + 1))[: max(size - len(magic), 0)]
    return magic + filler, content_type


def _kind(path: str) -> tuple[bytes, str]:
    extension = path.rsplit(".", 1)[-1].lower()
    return MAGIC.get(extension, (b"", "application/octet-stream"))


class AttachmentHost(LocalHttpServer):
    def __init__(
        self, port: int = 0, file_size: int = 64 * 1024, host_name: str = "127.0.0.1", tls: Optional[ssl.SSLContext] = None
    ):
        super().__init__(port, host_name, tls)
        self.file_size = file_size
        self.requests: Counter[str] = Counter()
        self._failing: dict[str, int] = {}
        self._outage: Optional[int] = None
        self.outage_answers = 0  # requests answered with the outage status
        self.streaming = 0  # responses being streamed right now, and the most at once
        self.most_streaming = 0

    def fail(self, path: str, status: int) -> None:
        self._failing["/" + path.lstrip("/")] = status

    def heal(self, path: str) -> None:
        self._failing.pop("/" + path.lstrip("/"), None)

    def outage(self, status: Optional[int]) -> None:
        self._outage = status

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/redirect", self._redirect)
        app.router.add_get("/raw-redirect", self._raw_redirect)
        app.router.add_get("/{kind}/{tail:.+}", self._serve)
        return app

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.requests[path] += 1
        if self._outage is not None:
            self.outage_answers += 1
            return web.Response(status=self._outage, text="outage")
        if path in self._failing:
            return web.Response(status=self._failing[path], text="scripted failure")
        kind, tail = request.match_info["kind"], request.match_info["tail"]
        head, _, _rest = tail.partition("/")
        if kind == "files":
            body, content_type = file_body(path, self.file_size)
            return web.Response(body=body, content_type=content_type)
        if kind == "status":
            return web.Response(status=int(head), text=f"status {head}")
        if kind == "flaky" and self.requests[path] <= int(head):
            return web.Response(status=503, text="try again")
        if kind == "flaky":
            body, content_type = file_body(path, self.file_size)
            return web.Response(body=body, content_type=content_type)
        if kind == "throttle":
            return web.Response(status=429, headers={"Retry-After": head}, text="slow down")
        if kind == "expired":
            return web.Response(status=403, text="<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")
        if kind == "as":
            body, _ = file_body(path, self.file_size)
            return web.Response(body=body, headers={"Content-Type": unquote(head)})
        if kind == "garbage":
            return _raw(request, b"SSH-2.0-not-http\r\n\r\n")
        if kind == "slow":
            return await self._stream(request, path, self.file_size, delay_s=float(head))
        if kind in ODDITIES:
            return await ODDITIES[kind](self, request, path, head)
        if kind == "big":
            return await self._stream(request, path, int(head))
        return web.Response(status=404)

    async def _stream(self, request: web.Request, path: str, size: int, delay_s: float = 0.0) -> web.StreamResponse:
        magic, content_type = _kind(path)
        response = web.StreamResponse(headers={"Content-Type": content_type, "Content-Length": str(size)})
        self.streaming += 1
        self.most_streaming = max(self.most_streaming, self.streaming)
        try:
            await response.prepare(request)
            if delay_s:
                await asyncio.sleep(delay_s)
            filler = hashlib.sha256(path.encode()).digest() * (CHUNK // 32)
            await response.write(magic)
            sent = len(magic)
            while sent < size:
                piece = filler[: min(CHUNK, size - sent)]
                await response.write(piece)
                sent += len(piece)
            await response.write_eof()
        finally:
            self.streaming -= 1
        return response

    async def _raw_redirect(self, request: web.Request) -> web.Response:
        self.requests[request.path] += 1
        return web.Response(status=302, headers={"Location": request.query["to"]})

    async def _redirect(self, request: web.Request) -> web.Response:
        self.requests[request.path] += 1
        raise web.HTTPFound(request.query["to"])


# ---- what hostile or broken hosts send -----------------------------------------------------


async def _gzip(host: AttachmentHost, request: web.Request, path: str, head: str) -> web.StreamResponse:
    body, content_type = file_body(path, host.file_size)
    return web.Response(body=gzip.compress(body), headers={"Content-Type": content_type, "Content-Encoding": "gzip"})


async def _bomb(host: AttachmentHost, request: web.Request, path: str, head: str) -> web.StreamResponse:
    magic, content_type = _kind(path)
    inflated = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    chunk = bytes(CHUNK)
    pieces = [inflated.compress(magic)] + [inflated.compress(chunk) for _ in range(int(head) // CHUNK)] + [inflated.flush()]
    return web.Response(body=b"".join(pieces), headers={"Content-Type": content_type, "Content-Encoding": "gzip"})


async def _encoded(host: AttachmentHost, request: web.Request, path: str, head: str) -> web.StreamResponse:
    body, content_type = file_body(path, host.file_size)
    return web.Response(body=body, headers={"Content-Type": content_type, "Content-Encoding": unquote(head)})


async def _drip(host: AttachmentHost, request: web.Request, path: str, head: str) -> web.StreamResponse:
    body, content_type = file_body(path, host.file_size)
    response = web.StreamResponse(headers={"Content-Type": content_type, "Content-Length": str(len(body))})
    await response.prepare(request)
    for byte in body:
        await response.write(bytes([byte]))
        await asyncio.sleep(float(head))
    return response


async def _retry_after(host: AttachmentHost, request: web.Request, path: str, head: str) -> web.StreamResponse:
    return web.Response(status=503, headers={"Retry-After": unquote(head)}, text="busy")


async def _loop(host: AttachmentHost, request: web.Request, path: str, head: str) -> web.StreamResponse:
    return web.Response(status=302, headers={"Location": path})


async def _long_header(host: AttachmentHost, request: web.Request, path: str, head: str) -> web.StreamResponse:
    body, content_type = file_body(path, host.file_size)
    return web.Response(body=body, headers={"Content-Type": content_type, "X-Padding": "x" * 20_000})


async def _short(host: AttachmentHost, request: web.Request, path: str, head: str) -> web.StreamResponse:
    body, content_type = file_body(path, 64)
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body) * 10}\r\n\r\n"
    return _raw(request, head.encode() + body)


def _raw(request: web.Request, data: bytes) -> web.Response:
    """Write ``data`` straight to the socket and hang up, whatever HTTP would say."""
    assert request.transport is not None
    request.transport.write(data)
    request.transport.close()
    return web.Response()  # never reaches the closed connection


async def _empty(host: AttachmentHost, request: web.Request, path: str, head: str) -> web.StreamResponse:
    _, content_type = _kind(path)
    return web.Response(body=b"", headers={"Content-Type": content_type})


async def _disposition(host: AttachmentHost, request: web.Request, path: str, head: str) -> web.StreamResponse:
    body, content_type = file_body("x.pdf", host.file_size)
    return web.Response(body=body, headers={"Content-Type": content_type, "Content-Disposition": request.query["cd"]})


ODDITIES = {
    "gzip": _gzip,
    "bomb": _bomb,
    "encoded": _encoded,
    "drip": _drip,
    "retry-after": _retry_after,
    "loop": _loop,
    "long-header": _long_header,
    "short": _short,
    "empty": _empty,
    "disposition": _disposition,
}
