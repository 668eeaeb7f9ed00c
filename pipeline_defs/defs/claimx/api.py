"""The ClaimX REST API as a Dagster resource with typed async methods.

A client (one per batch) bounds concurrency, times out every call, retries 5xx/429/timeouts with
exponential backoff and jitter, and shares identical requests. A Retry-After longer than the
in-run backoff ends the call, so the task waits in a retry topic instead of the run. The circuit
breaker lives for the whole run: when the API keeps failing a storm costs a few calls and the
tasks wait in retry topics. A 404 (or 410) is an answer, ``None``, not an error.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Optional, TypeVar
from urllib.parse import quote

import aiohttp
import dagster as dg
from pydantic import PrivateAttr, ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from pipeline_defs.defs.claimx.api_models import (
    ApiModel,
    Contact,
    CustomTask,
    Media,
    Project,
    VideoCollaboration,
)
from pipeline_defs.defs.claimx.settings import ClaimXApiSettings
from pipeline_defs.lib.attachments.circuit_breaker import CircuitBreakers
from pipeline_defs.lib.ingest.failures import FailureCategory, TaskFailure, http_failure
from pipeline_defs.lib.ingest.guard import InfrastructureError

BREAKER_KEY = "claimx-api"


class ApiError(Exception):
    """A call that did not produce an answer; ``failure`` says whether waiting helps."""

    def __init__(self, failure: TaskFailure):
        super().__init__(f"{failure.code}: {failure.detail}")
        self.failure = failure


class ApiAccessRefused(InfrastructureError):
    """The API refused our credentials (401): no event is to blame, the run fails and its
    offsets stay put until the token is fixed."""


T = TypeVar("T")


def found(answer: Optional[T], what: str) -> T:
    """The answer, or a permanent not-found failure naming what is missing."""
    if answer is None:
        raise ApiError(TaskFailure(FailureCategory.PERMANENT, "not_found", f"{what} not found (HTTP 404)"))
    return answer


Model = TypeVar("Model", bound=ApiModel)


class ClaimXApiClient:
    """One run's view of the API: ``async with resource.client() as api: await api.get_project(id)``."""

    def __init__(self, settings: ClaimXApiSettings, session: aiohttp.ClientSession, breakers: CircuitBreakers):
        self.settings = settings
        self.breakers = breakers
        self.calls: Counter[str] = Counter()  # HTTP requests sent, by endpoint
        self.cache_hits = 0
        self.not_found = 0
        self._session = session
        self._slots = asyncio.Semaphore(settings.max_concurrent)
        self._answers: dict[str, asyncio.Task] = {}

    # ---- typed endpoints ----------------------------------------------------------------
    async def get_project(self, project_id: str) -> Optional[Project]:
        return await self._one(Project, "project", f"projects/{_segment(project_id)}")

    async def get_project_media(self, project_id: str) -> Optional[list[Media]]:
        return await self._many(Media, "project_media", f"projects/{_segment(project_id)}/media")

    async def get_project_contacts(self, project_id: str) -> Optional[list[Contact]]:
        return await self._many(Contact, "project_contacts", f"projects/{_segment(project_id)}/contacts")

    async def get_project_tasks(self, project_id: str) -> Optional[list[CustomTask]]:
        return await self._many(CustomTask, "project_tasks", f"projects/{_segment(project_id)}/tasks")

    async def get_custom_task(self, assignment_id: str) -> Optional[CustomTask]:
        return await self._one(CustomTask, "custom_task", f"custom-tasks/{_segment(assignment_id)}")

    async def get_video_collaboration(self, collaboration_id: str) -> Optional[VideoCollaboration]:
        return await self._one(VideoCollaboration, "video_collaboration", f"video-collaborations/{_segment(collaboration_id)}")

    # ---- plumbing -----------------------------------------------------------------------
    async def _one(self, model: type[Model], endpoint: str, path: str) -> Optional[Model]:
        document = await self._get(endpoint, path)
        return None if document is None else _parsed(model, endpoint, document)

    async def _many(self, model: type[Model], endpoint: str, path: str) -> Optional[list[Model]]:
        document = await self._get(endpoint, path)
        if document is None:
            return None
        if not isinstance(document, list):
            raise ApiError(TaskFailure(FailureCategory.PERMANENT, "bad_response", f"{endpoint}: expected a list"))
        return [_parsed(model, endpoint, item) for item in document]

    async def _get(self, endpoint: str, path: str) -> Any:
        """One call per path and run: concurrent and later askers share the first answer."""
        answer = self._answers.get(path)
        if answer is not None:
            self.cache_hits += 1
        else:
            answer = self._answers[path] = asyncio.ensure_future(self._fetch(endpoint, path))
        return await asyncio.shield(answer)

    async def _fetch(self, endpoint: str, path: str) -> Any:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(self._worth_waiting_for),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._attempt(endpoint, path)

    async def _attempt(self, endpoint: str, path: str) -> Any:
        if not self.breakers.allow(BREAKER_KEY):
            raise ApiError(TaskFailure(FailureCategory.CIRCUIT_OPEN, "circuit_open", "ClaimX API circuit is open"))
        url = f"{self.settings.base_url.rstrip('/')}/{path}"
        async with self._slots:
            self.calls[endpoint] += 1
            try:
                async with self._session.get(url, allow_redirects=False) as response:
                    if response.status == 401:
                        raise ApiAccessRefused(f"ClaimX API refused the token ({endpoint}: HTTP 401)")
                    if response.status in (404, 410):
                        self.not_found += 1
                        self.breakers.record_success(BREAKER_KEY)
                        return None
                    if response.status == 200:
                        document = await _json(response, endpoint)
                        self.breakers.record_success(BREAKER_KEY)
                        return document
                    failure = http_failure(response.status, response.headers.get("Retry-After"))
            except TimeoutError:
                failure = TaskFailure(FailureCategory.TRANSIENT, "timeout", f"{endpoint} timed out")
            except aiohttp.ClientError as exc:
                failure = TaskFailure(FailureCategory.TRANSIENT, "connection_error", f"{endpoint}: {type(exc).__name__}")
        if failure.category is FailureCategory.TRANSIENT:
            self.breakers.record_failure(BREAKER_KEY)
        else:
            self.breakers.record_success(BREAKER_KEY)  # the API answered; it is not down
        raise ApiError(TaskFailure(failure.category, failure.code, f"{endpoint}: {failure.detail}", failure.retry_after_s))

    def _worth_waiting_for(self, error: BaseException) -> bool:
        """Transient failures are retried in the run, unless the API asked for a longer pause
        than the run waits: then the task goes to a retry topic that waits long enough."""
        if not isinstance(error, ApiError) or error.failure.category is not FailureCategory.TRANSIENT:
            return False
        return (error.failure.retry_after_s or 0.0) <= self.settings.max_backoff_s

    def _wait(self, state: RetryCallState) -> float:
        backoff = wait_exponential_jitter(
            multiplier=self.settings.backoff_s, max=self.settings.max_backoff_s, jitter=self.settings.backoff_s
        )(state)
        error = state.outcome.exception() if state.outcome else None
        asked = error.failure.retry_after_s if isinstance(error, ApiError) and error.failure.retry_after_s else 0.0
        return max(backoff, asked)


def _segment(identifier: str) -> str:
    """An id as one path segment: ``../x`` or ``1?a=b`` cannot reach another endpoint."""
    return quote(identifier, safe="")


async def _json(response: aiohttp.ClientResponse, endpoint: str) -> Any:
    try:
        return await response.json(content_type=None)
    except ValueError:  # a body that is not JSON: asking again will not change it
        raise ApiError(TaskFailure(FailureCategory.PERMANENT, "bad_response", f"{endpoint}: body is not JSON")) from None


def _parsed(model: type[Model], endpoint: str, document: Any) -> Model:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors(include_input=False))
        raise ApiError(TaskFailure(FailureCategory.PERMANENT, "bad_response", f"{endpoint}: invalid {fields}")) from None


class ClaimXApiResource(dg.ConfigurableResource):
    """The ClaimX REST API. ``token`` is bound with ``dg.EnvVar`` and sent as a bearer token."""

    settings: ClaimXApiSettings
    token: Optional[str] = None

    _breakers: Optional[CircuitBreakers] = PrivateAttr(default=None)

    @property
    def breakers(self) -> CircuitBreakers:
        """One breaker for the resource's lifetime (a run), shared by all its clients."""
        if self._breakers is None:
            self._breakers = CircuitBreakers(
                failure_threshold=self.settings.circuit_failure_threshold, reset_timeout_s=self.settings.circuit_reset_s
            )
        return self._breakers

    @asynccontextmanager
    async def client(self) -> AsyncIterator[ClaimXApiClient]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
        connector = aiohttp.TCPConnector(limit=self.settings.max_concurrent)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as session:
            yield ClaimXApiClient(self.settings, session, self.breakers)
