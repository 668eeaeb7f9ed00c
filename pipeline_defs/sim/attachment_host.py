"""An attachment host on 127.0.0.1: serves plausible files for the URLs the simulator emits."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from typing import Optional

from aiohttp import web

MAGIC = {
    "pdf": (b"%PDF-1.7\n", "application/pdf"),
    "jpg": (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
    "png": (b"\x89PNG\r\n\x1a\n", "image/png"),
    "xml": (b'<?xml version="1.0"?>\n<estimate/>\n', "application/xml"),
}


def file_body(path: str, size: int) -> tuple[bytes, str]:
    """Deterministic content for a path: the right magic bytes, then filler to ``size``."""
    extension = path.rsplit(".", 1)[-1].lower()
    magic, content_type = MAGIC.get(extension, (b"", "application/octet-stream"))
    seed = hashlib.sha256(path.encode()).digest()
    filler = (seed * (size // len(seed) + 1))[: max(size - len(magic), 0)]
    return magic + filler, content_type


class AttachmentHost:
    """``GET /files/<anything>.<ext>`` returns ``file_size`` bytes of that type."""

    def __init__(self, port: int = 0, file_size: int = 64 * 1024):
        self.port = port
        self.file_size = file_size
        self._runner: Optional[web.AppRunner] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve_file(self, request: web.Request) -> web.Response:
        body, content_type = file_body(request.match_info["path"], self.file_size)
        return web.Response(body=body, content_type=content_type)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/files/{path:.+}", self._serve_file)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the port chosen when port=0

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def start_in_thread(self) -> "AttachmentHost":
        """Serve from a background thread (tests, benchmarks)."""
        started = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start())
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="attachment-host", daemon=True)
        self._thread.start()
        started.wait(10)
        return self

    def stop_thread(self) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
