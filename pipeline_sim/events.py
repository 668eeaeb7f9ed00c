"""Realistic XACT events, and the broken ones a real source also sends."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime
from typing import Any, Optional

SUBTYPES = [
    ("documentsReceived", 0.55, ["pdf", "jpg", "png"]),
    ("firstNoticeOfLossReceived", 0.15, ["pdf"]),
    ("estimatePackageReceived", 0.15, ["pdf", "xml"]),
    ("statusChanged", 0.15, []),
]


def xact_event(
    rng: random.Random,
    attachment_base_url: str,
    trace_id: Optional[str] = None,
    now: Optional[datetime] = None,
) -> dict[str, Any]:
    subtype, _, extensions = rng.choices(SUBTYPES, weights=[w for _, w, _ in SUBTYPES])[0]
    trace_id = trace_id or str(uuid.UUID(int=rng.getrandbits(128)))
    attachments = (
        [
            f"{attachment_base_url.rstrip('/')}/files/{trace_id}/{name}_{i}.{rng.choice(extensions)}"
            for i, name in enumerate(rng.sample(["report", "photo", "estimate", "invoice"], k=rng.randint(1, 2)))
        ]
        if extensions
        else []
    )
    return {
        "trace_id": trace_id,
        "event_type": f"verisk.claims.property.xn.{subtype}",
        "event_subtype": subtype,
        "timestamp": (now or datetime.now(UTC)).isoformat(),
        "source_system": "xn",
        "payload": {
            "assignmentId": f"A{rng.randint(100000, 999999)}",
            "estimateVersion": str(rng.randint(1, 4)) if subtype == "estimatePackageReceived" else None,
            "claimNumber": f"CLM-{rng.randint(10**7, 10**8 - 1)}",
            "carrierId": rng.choice(["C001", "C017", "C042"]),
        },
        "attachments": attachments,
    }


MALFORMED_MESSAGES = [
    b"{not json",
    b"\xff\xfe binary garbage",
    json.dumps({"event_type": "verisk.claims.property.xn.documentsReceived"}).encode(),  # no trace_id
    json.dumps(
        {
            "trace_id": "t-bad-ts",
            "event_type": "verisk.claims.property.xn.documentsReceived",
            "event_subtype": "documentsReceived",
            "timestamp": "yesterday-ish",
        }
    ).encode(),
    json.dumps(["an", "array", "not", "an", "object"]).encode(),
]


# Attachment failures a real host produces, by share of attachment URLs.
FAILING_ATTACHMENTS = [
    ("/status/404/", 0.03),  # gone: dead-lettered
    ("/flaky/1/", 0.02),  # 503 once: lands after one retry
    ("/as/text%2Fhtml/", 0.01),  # a login page instead of the file: dead-lettered
]


def with_failing_attachments(event: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    urls = []
    for url in event["attachments"]:
        roll = rng.random()
        for marker, share in FAILING_ATTACHMENTS:
            if roll < share:
                url = url.replace("/files/", marker, 1)
                break
            roll -= share
        urls.append(url)
    return {**event, "attachments": urls}


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()
