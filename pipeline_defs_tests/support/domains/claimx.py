"""ClaimX's test resources: its topics, the API double and the media host on 127.0.0.1."""

from collections.abc import Iterator

import pytest

from pipeline_defs.defs.claimx.api import ClaimXApiResource
from pipeline_defs.defs.claimx.settings import ClaimXApiSettings, ClaimXTopicsResource
from pipeline_defs.lib.attachments.downloader import AttachmentHttpResource
from pipeline_defs.lib.settings import DownloadSettings
from pipeline_sim.attachment_host import AttachmentHost
from pipeline_sim.claimx_api import ClaimXApiDouble
from pipeline_sim.claimx_world import ClaimXWorld

CLAIMX_TOKEN = "test-claimx-token"


@pytest.fixture
def media_host() -> Iterator[AttachmentHost]:
    """The ClaimX media host (presigned links point here as ``media.claimx.test``)."""
    server = AttachmentHost(host_name="media.claimx.test", file_size=16 * 1024).start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture
def claimx_world(media_host: AttachmentHost) -> ClaimXWorld:
    return ClaimXWorld(media_host.base_url)


@pytest.fixture
def claimx_api_double(claimx_world: ClaimXWorld) -> Iterator[ClaimXApiDouble]:
    server = ClaimXApiDouble(claimx_world, token=CLAIMX_TOKEN).start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture
def claimx_api(claimx_api_double: ClaimXApiDouble) -> ClaimXApiResource:
    """Short waits and a low circuit threshold, so storms play out in seconds."""
    return ClaimXApiResource(
        settings=ClaimXApiSettings(
            base_url=claimx_api_double.base_url,
            timeout_s=2,
            max_attempts=3,
            backoff_s=0.05,
            max_backoff_s=0.2,
            circuit_failure_threshold=3,
        ),
        token=CLAIMX_TOKEN,
    )


@pytest.fixture
def claimx_media_http() -> AttachmentHttpResource:
    return AttachmentHttpResource(
        settings=DownloadSettings(
            allowed_hosts=["media.claimx.test"],
            allowed_extensions=["jpg", "png", "mp4", "pdf"],
            allow_http=True,
            allowed_ports=[],
            loopback_hosts=["media.claimx.test"],
            extra_hosts={"media.claimx.test": "127.0.0.1"},
            read_timeout_s=2,
            connect_timeout_s=2,
        )
    )


@pytest.fixture
def claimx_resources(topics, claimx_api, claimx_media_http) -> dict[str, object]:
    return {
        "claimx_topics": ClaimXTopicsResource(topics=topics.claimx),
        "claimx_api": claimx_api,
        "claimx_media_http": claimx_media_http,
    }
