"""The ClaimX API client against the API double on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time

import pytest

from pipeline_defs.defs.claimx.api import BREAKER_KEY, ApiAccessRefused, ApiError, ClaimXApiResource
from pipeline_defs.defs.claimx.settings import ClaimXApiSettings
from pipeline_defs.lib.attachments.circuit_breaker import CircuitState
from pipeline_defs.lib.ingest.failures import FailureCategory


def call(resource: ClaimXApiResource, method: str, *args):
    async def go():
        async with resource.client() as api:
            try:
                return await getattr(api, method)(*args), api
            except ApiError as error:
                return error, api

    return asyncio.run(go())


def test_every_endpoint_answers_with_typed_models(claimx_api, claimx_world):
    project = claimx_world.new_project()
    collaboration = claimx_world.invite_video(project)
    for _ in range(2):
        claimx_world.add_media(project)

    async def everything():
        async with claimx_api.client() as api:
            return await asyncio.gather(
                api.get_project(project),
                api.get_project_media(project),
                api.get_project_contacts(project),
                api.get_project_tasks(project),
                api.get_custom_task(f"{project}-t0"),
                api.get_video_collaboration(collaboration),
            )

    found, media, contacts, tasks, task, video = asyncio.run(everything())
    assert found.project_id == project and found.address.city
    assert [m.media_id for m in media] == [f"{project}-m0", f"{project}-m1"] and media[0].url_expires_at is not None
    assert {c.role for c in contacts} == {"POLICYHOLDER", "ADJUSTER"}
    assert tasks[0].assignment_id == task.assignment_id == f"{project}-t0" and task.template.template_id
    assert video.collaboration_id == collaboration and video.status == "INVITE_SENT"


def test_a_404_is_an_answer_not_an_error(claimx_api, claimx_api_double):
    claimx_api_double.not_found("404404")

    answer, api = call(claimx_api, "get_project", "404404")

    assert answer is None and api.not_found == 1
    assert sum(api.calls.values()) == 1  # not retried
    assert api.breakers.state(BREAKER_KEY) is CircuitState.CLOSED


def test_5xx_is_retried_with_backoff_and_then_reported_transient(claimx_api, claimx_api_double, claimx_world):
    project = claimx_world.new_project()
    claimx_api_double.storm(503, requests=2)

    started = time.monotonic()
    answer, api = call(claimx_api, "get_project", project)

    assert answer.project_id == project and api.calls["project"] == 3  # two 503s, then the answer
    assert time.monotonic() - started >= 0.05 + 0.1  # it backed off: 0.05 s, then 0.1 s (plus jitter)
    claimx_api_double.storm(503)
    error, api = call(claimx_api, "get_project", project)
    assert isinstance(error, ApiError) and error.failure.category is FailureCategory.TRANSIENT
    assert error.failure.code == "http_503" and api.calls["project"] == 3


def test_a_retry_after_longer_than_the_run_waits_ends_the_call_for_a_retry_topic(claimx_api, claimx_api_double, claimx_world):
    claimx_api_double.storm(429, retry_after=120)

    error, api = call(claimx_api, "get_project", claimx_world.new_project())

    assert error.failure.code == "http_429" and error.failure.retry_after_s == 120
    assert api.calls["project"] == 1  # not retried in the run: route_failure picks a topic that waits 120 s


def test_the_circuit_opens_after_consecutive_failures_and_then_spares_the_api(claimx_api, claimx_api_double):
    claimx_api_double.storm(503)

    async def many():
        async with claimx_api.client() as api:
            outcomes = []
            for project in range(10):
                try:
                    await api.get_project(str(project))
                except ApiError as error:
                    outcomes.append(error.failure.category)
            return outcomes, api

    outcomes, api = asyncio.run(many())

    assert outcomes.count(FailureCategory.CIRCUIT_OPEN) == 9  # the first call's 3 attempts opened it
    assert claimx_api_double.total_requests == 3
    assert [(t.from_state, t.to_state) for t in api.breakers.transitions] == [(CircuitState.CLOSED, CircuitState.OPEN)]


def test_a_slow_api_times_out_as_transient(claimx_api_double, claimx_world):
    claimx_api_double.delay(1.0)
    impatient = ClaimXApiResource(
        settings=ClaimXApiSettings(base_url=claimx_api_double.base_url, timeout_s=0.3, max_attempts=2, backoff_s=0.01),
        token="test-claimx-token",
    )

    error, api = call(impatient, "get_project", claimx_world.new_project())

    assert error.failure.code == "timeout" and error.failure.category is FailureCategory.TRANSIENT
    assert api.calls["project"] == 2


def test_a_refused_token_is_the_runs_problem_not_the_events(claimx_api_double, claimx_world):
    anonymous = ClaimXApiResource(settings=ClaimXApiSettings(base_url=claimx_api_double.base_url, max_attempts=3))

    with pytest.raises(ApiAccessRefused):
        call(anonymous, "get_project", claimx_world.new_project())
    assert claimx_api_double.total_requests == 1


def test_a_403_for_one_resource_is_an_auth_failure_of_that_item(claimx_api, claimx_api_double, claimx_world):
    claimx_api_double.storm(403, requests=1)

    error, api = call(claimx_api, "get_project", claimx_world.new_project())

    assert error.failure.category is FailureCategory.AUTH and api.calls["project"] == 1


def test_an_answer_the_client_cannot_use_is_a_permanent_bad_response(claimx_api, claimx_api_double, claimx_world):
    project = claimx_world.new_project()
    claimx_api_double.garble(project)

    error, _ = call(claimx_api, "get_project_media", project)

    assert error.failure.category is FailureCategory.PERMANENT and error.failure.code == "bad_response"
    assert "mediaId" in error.failure.detail  # names the fields, as the API spells them


def test_an_id_cannot_reach_another_endpoint(claimx_api, claimx_api_double):
    answer, _ = call(claimx_api, "get_custom_task", "../projects/1")

    assert answer is None and claimx_api_double.requests == {"custom_task": 1}


def test_the_breaker_half_opens_after_its_cool_down_and_one_success_closes_it(claimx_api_double, claimx_world):
    quick = ClaimXApiResource(
        settings=ClaimXApiSettings(
            base_url=claimx_api_double.base_url, max_attempts=1, circuit_failure_threshold=2, circuit_reset_s=0.3
        ),
        token="test-claimx-token",
    )
    project = claimx_world.new_project()
    claimx_api_double.storm(503)
    for _ in range(3):
        call(quick, "get_project", project + "0")  # each call its own client; the breaker is the run's
    assert quick.breakers.state(BREAKER_KEY) is CircuitState.OPEN and claimx_api_double.total_requests == 2

    claimx_api_double.calm()
    time.sleep(0.35)
    answer, _ = call(quick, "get_project", project)

    assert answer is not None and quick.breakers.state(BREAKER_KEY) is CircuitState.CLOSED
    states = [(t.from_state, t.to_state) for t in quick.breakers.transitions]
    assert states == [
        (CircuitState.CLOSED, CircuitState.OPEN),
        (CircuitState.OPEN, CircuitState.HALF_OPEN),
        (CircuitState.HALF_OPEN, CircuitState.CLOSED),
    ]


@pytest.mark.parametrize("limit", [1, 4])
def test_concurrency_stays_within_the_limit_and_identical_calls_are_shared(claimx_api_double, claimx_world, limit):
    claimx_api_double.delay(0.05)
    bounded = ClaimXApiResource(
        settings=ClaimXApiSettings(base_url=claimx_api_double.base_url, max_concurrent=limit),
        token="test-claimx-token",
    )
    projects = [claimx_world.new_project() for _ in range(8)]

    async def twice_each():
        async with bounded.client() as api:
            await asyncio.gather(*(api.get_project(p) for p in projects * 2))
            return api

    api = asyncio.run(twice_each())

    assert api.calls["project"] == 8 and api.cache_hits == 8
    assert claimx_api_double.total_requests == 8
    assert claimx_api_double.max_in_flight == limit
