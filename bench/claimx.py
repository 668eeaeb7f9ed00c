"""ClaimX enrichment through the deployed path: events already waiting in Kafka when the daemon
starts, until every one has its row in claimx_enrichment_log. The API double, serving the world
the events describe from its own process (as a real API would be), counts every call, so the
figure comes with its cost: API calls per 1,000 events."""

from __future__ import annotations

import json
import random
import time
import urllib.request

from bench.daemon import pipeline, wait_until
from bench.ingest import produce
from pipeline_defs_tests.support.stack import LocalStack
from pipeline_sim.attachment_host import AttachmentHost
from pipeline_sim.claimx_api import ClaimXApiDouble
from pipeline_sim.claimx_events import ClaimXEventSource
from pipeline_sim.claimx_world import ClaimXWorld
from pipeline_sim.events import encode
from pipeline_sim.http_server import LocalHttpServer

MEDIA_HOST = "media.claimx.bench"
TOKEN = "bench-claimx-token"


def requests_served(server: LocalHttpServer) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/_stats", timeout=10) as answer:
        return json.load(answer)["requests"]


def claimx_settings_env(api_base_url: str) -> dict[str, str]:
    """Settings pointing the pipeline at the API double and letting it fetch from the media host
    on loopback (plain HTTP, any port), the token through its environment variable."""
    return {
        "PIPELINE_CLAIMX__API__BASE_URL": api_base_url,
        "PIPELINE_CLAIMX__API__TOKEN_ENV": "BENCH_CLAIMX_TOKEN",
        "BENCH_CLAIMX_TOKEN": TOKEN,
        "PIPELINE_CLAIMX__MEDIA__ALLOWED_HOSTS": f'["{MEDIA_HOST}"]',
        "PIPELINE_CLAIMX__MEDIA__ALLOW_HTTP": "true",
        "PIPELINE_CLAIMX__MEDIA__ALLOWED_PORTS": "[]",
        "PIPELINE_CLAIMX__MEDIA__LOOPBACK_HOSTS": f'["{MEDIA_HOST}"]',
        "PIPELINE_CLAIMX__MEDIA__EXTRA_HOSTS": f'{{"{MEDIA_HOST}": "127.0.0.1"}}',
    }


def enrichment(stack: LocalStack, events: int = 20_000) -> dict:
    media = AttachmentHost(host_name=MEDIA_HOST, file_size=16 * 1024).start_in_process()
    world = ClaimXWorld(media.base_url)
    source = ClaimXEventSource(world, random.Random(1))
    stream = [source.event() for _ in range(events)]  # the world now holds what they describe
    api = ClaimXApiDouble(world, token=TOKEN).start_in_process()
    claimx_env = claimx_settings_env(api.base_url)
    try:
        with pipeline(stack, max_events_per_run=50_000, extra_env=claimx_env) as run:

            def claimx_event(i: int) -> tuple[bytes, bytes]:
                return encode(stream[i]), str(stream[i]["project_id"]).encode()

            produce(run.resources["kafka"], run.topics.claimx.events, events, make=claimx_event)
            started = time.monotonic()
            run.start_daemon()
            series: list[tuple[float, int]] = []

            def done() -> bool:
                series.append((round(time.monotonic() - started, 1), run.count("claimx_enrichment_log")))
                return series[-1][1] >= events

            wait_until(done, timeout_s=1200, every_s=2.0)
            outcomes = dict(run.rows("claimx_enrichment_log", ["outcome"]).group_by("outcome").len().iter_rows())
            instance = run.instance()
            step_seconds = [
                round(s.end_time - s.start_time, 2)
                for s in (instance.get_run_stats(r.run_id) for r in instance.get_runs())
                if s.end_time and s.start_time
            ]
            entity_rows = {t: run.count(t) for t in ("claimx_projects", "claimx_media", "claimx_tasks", "claimx_contacts")}
            served = requests_served(api)
    finally:
        api.stop_process()
        media.stop_process()
    seconds = series[-1][0]
    calls = sum(served.values())
    return {
        "events": events,
        "outcomes": outcomes,
        "seconds_from_daemon_start": seconds,
        "events_per_s": round(events / seconds, 1),
        "api_calls": calls,
        "api_calls_per_1000_events": round(calls * 1000 / events, 1),
        "api_calls_by_endpoint": served,
        "runs": len(step_seconds),
        "entity_rows": entity_rows,
        "series": series,
    }
