"""XACT's test resources: its topics, and attachment hosts on 127.0.0.1."""

import pytest

from pipeline_defs.defs.xact.settings import XactTopicsResource
from pipeline_defs.lib.attachments.downloader import AttachmentHttpResource
from pipeline_defs.lib.settings import DownloadSettings


@pytest.fixture
def attachment_http() -> AttachmentHttpResource:
    """Test hosts: ``attachments.test`` (the local server, loopback allowed) and
    ``internal.test``, which resolves to a private address and must always be refused."""
    return AttachmentHttpResource(
        settings=DownloadSettings(
            allowed_hosts=["attachments.test", "internal.test", "files.example.com"],
            allow_http=True,
            allowed_ports=[],
            loopback_hosts=["attachments.test"],
            extra_hosts={"attachments.test": "127.0.0.1", "internal.test": "10.1.2.3"},
            read_timeout_s=2,
            connect_timeout_s=2,
            concurrency=8,
        )
    )


@pytest.fixture
def xact_resources(topics, attachment_http) -> dict[str, object]:
    return {"xact_topics": XactTopicsResource(topics=topics.xact), "attachment_http": attachment_http}
