"""A local aiohttp server on 127.0.0.1, run in the caller's loop (the simulator) or in a
background thread (tests, benchmarks)."""

from __future__ import annotations

import asyncio
import multiprocessing
import ssl
import threading
from abc import ABC, abstractmethod
from typing import Optional, TypeVar

from aiohttp import web

Server = TypeVar("Server", bound="LocalHttpServer")


class LocalHttpServer(ABC):
    def __init__(self, port: int = 0, host_name: str = "127.0.0.1", tls: Optional[ssl.SSLContext] = None):
        self.port = port  # 0: any free port, known after start
        self.host_name = host_name  # the name URLs use; the pipeline's config resolves it
        self.tls = tls  # serve https with this server context
        self._runner: Optional[web.AppRunner] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._process: Optional[multiprocessing.process.BaseProcess] = None

    @abstractmethod
    def app(self) -> web.Application: ...

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host_name}:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.tls)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def start_in_thread(self: Server) -> Server:
        started = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start())
            started.set()
            self._loop.run_forever()

        threading.Thread(target=serve, name=type(self).__name__, daemon=True).start()
        if not started.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self

    def stop_thread(self) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)

    def start_in_process(self: Server) -> Server:
        """Serve from a child process, with its own interpreter (benchmarks: a server in the
        measuring process would share its GIL). Its controls stay with the child."""
        context = multiprocessing.get_context("spawn")
        ports = context.Queue()
        self._process = context.Process(target=_serve_forever, args=(self, ports), daemon=True)
        self._process.start()
        self.port = ports.get(timeout=30)
        return self

    def stop_process(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.join(10)


def _serve_forever(server: LocalHttpServer, ports: multiprocessing.Queue[int]) -> None:
    loop = asyncio.new_event_loop()
    loop.run_until_complete(server.start())
    ports.put(server.port)
    loop.run_forever()
