"""Unsigned OAUTHBEARER tokens (``alg: none``) for the local Event Hub stand-in, whose broker
checks them with Kafka's unsecured validator: ``python -m pipeline_sim token --scope S``."""

from __future__ import annotations

import argparse
import base64
import json
import time
from typing import Optional


def _part(value: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def unsecured_jws(claims: dict) -> str:
    """A JWS without a signature (``alg: none``), what Kafka's unsecured validator reads."""
    return f"{_part({'alg': 'none'})}.{_part(claims)}."


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="pipeline-sim token", description=__doc__)
    parser.add_argument("--scope", required=True)
    parser.add_argument("--lifetime-s", type=int, default=3600)
    parser.add_argument("--subject", default="pipeline")
    args = parser.parse_args(argv)
    now = int(time.time())
    print(unsecured_jws({"sub": args.subject, "iat": now, "exp": now + args.lifetime_s, "scope": args.scope}))
