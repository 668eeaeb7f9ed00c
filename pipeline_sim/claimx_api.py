"""The ClaimX REST API double on 127.0.0.1, answering from a ``ClaimXWorld``.

    GET /projects/<id>            /projects/<id>/media   /projects/<id>/contacts
    GET /projects/<id>/tasks      /custom-tasks/<assignment id>
    GET /video-collaborations/<id>

It can be told to misbehave the ways the real one does: ``not_found(project_id)`` (404 for that
project and its children, until ``restore``), ``storm(503, requests=None)`` (every request fails until ``calm()``),
``delay(seconds)`` (slow answers), ``garble(project_id)`` (answers the client cannot parse),
``poison(project_id, body, endpoint)`` (exactly these bytes, however hostile, as a 200 JSON
answer, for one endpoint or all) and
``expire_links(media_ids)`` (the next media listing hands out links that have already expired). ``requests`` counts calls by endpoint, ``max_in_flight``
the most answered at once; ``GET /_stats`` reports both.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Optional

from aiohttp import web

from pipeline_sim.claimx_world import ClaimXWorld, owner
from pipeline_sim.http_server import LocalHttpServer

LIST_ENDPOINTS = {"project_media", "project_contacts", "project_tasks"}


class ClaimXApiDouble(LocalHttpServer):
    def __init__(self, world: ClaimXWorld, port: int = 0, host_name: str = "127.0.0.1", token: Optional[str] = None):
        super().__init__(port, host_name)
        self.world = world
        self.token = token
        self.requests: Counter[str] = Counter()
        self.in_flight = self.max_in_flight = 0  # concurrent requests being answered
        self._missing: set[str] = set()
        self._storm_status: Optional[int] = None
        self._storm_left: Optional[int] = None
        self._storm_retry_after: Optional[int] = None
        self._poisoned: dict[tuple[str, Optional[str]], bytes] = {}
        self._delay_s = 0.0
        self._expire_next: set[str] = set()

    # ---- controls -------------------------------------------------------------------------
    def not_found(self, project_id: str) -> None:
        self._missing.add(project_id)

    def restore(self, project_id: str) -> None:
        self._missing.discard(project_id)

    def storm(self, status: int = 503, requests: Optional[int] = None, retry_after: Optional[int] = None) -> None:
        """Answer ``status`` to every request (or to the next ``requests``) until ``calm()``,
        with a Retry-After header when given."""
        self._storm_status, self._storm_left, self._storm_retry_after = status, requests, retry_after

    def calm(self) -> None:
        self._storm_status = self._storm_left = self._storm_retry_after = None

    def garble(self, project_id: str) -> None:
        """Answer for this project (and its children) with JSON the client cannot use."""
        self.poison(project_id, json.dumps({"unexpected": True}).encode())

    def poison(self, project_id: str, body: bytes, endpoint: Optional[str] = None) -> None:
        """Answer ``body`` for this project and its children on ``endpoint`` (all endpoints when
        None; lists get a JSON object as their one item), with status 200 and a JSON content type."""
        self._poisoned[(project_id, endpoint)] = body

    def delay(self, seconds: float) -> None:
        self._delay_s = seconds

    def expire_links(self, media_ids: set[str]) -> None:
        self._expire_next |= media_ids

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    # ---- serving --------------------------------------------------------------------------
    def app(self) -> web.Application:
        routes: list[tuple[str, str, Callable[[str], Any]]] = [
            ("/projects/{id}", "project", self.world.project_json),
            ("/projects/{id}/media", "project_media", self._media),
            ("/projects/{id}/contacts", "project_contacts", self.world.contacts_json),
            ("/projects/{id}/tasks", "project_tasks", self.world.tasks_json),
            ("/custom-tasks/{id}", "custom_task", self.world.custom_task_json),
            ("/video-collaborations/{id}", "video_collaboration", self.world.video_json),
        ]
        app = web.Application()
        for path, endpoint, answer in routes:
            app.router.add_get(path, self._handler(endpoint, answer))
        app.router.add_get("/_stats", self._stats)
        return app

    async def _stats(self, _: web.Request) -> web.Response:
        """The call counts, for a double serving from another process (benchmarks)."""
        return web.json_response({"requests": dict(self.requests), "max_in_flight": self.max_in_flight})

    def _media(self, project_id: str) -> list[dict[str, Any]]:
        expired, self._expire_next = frozenset(self._expire_next), set()
        return self.world.media_json(project_id, expired)

    def _handler(self, endpoint: str, answer: Callable[[str], Any]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            self.requests[endpoint] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return await respond(request)
            finally:
                self.in_flight -= 1

        async def respond(request: web.Request) -> web.Response:
            if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
                return web.json_response({"error": "unauthorized"}, status=401)
            if self._delay_s:
                await asyncio.sleep(self._delay_s)
            if self._storm_status is not None and self._storm_left != 0:
                self._storm_left = None if self._storm_left is None else self._storm_left - 1
                headers = {"Retry-After": str(self._storm_retry_after)} if self._storm_retry_after is not None else {}
                return web.json_response({"error": "unavailable"}, status=self._storm_status, headers=headers)
            item_id = request.match_info["id"]
            project_id = item_id if endpoint.startswith("project") else owner(item_id)
            body = self._poisoned.get((project_id, endpoint), self._poisoned.get((project_id, None)))
            if body is not None:
                if endpoint in LIST_ENDPOINTS and body.lstrip().startswith(b"{"):
                    body = b"[" + body + b"]"
                return web.Response(body=body, content_type="application/json")
            document = None if project_id in self._missing else answer(item_id)
            if document is None:
                return web.json_response({"error": "not found"}, status=404)
            return web.json_response(document)

        return handle
