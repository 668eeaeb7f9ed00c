"""Credentials besides azure-identity's: a bearer token kept in a file (the seeds'
``FileBackedKustoCredential``), which a sidecar or an operator rotates; for Kusto and for
OAUTHBEARER Kafka clusters alike."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

from azure.core.credentials import AccessToken

from pipeline_defs.lib.ingest.guard import InfrastructureError

# A token whose file says nothing of its expiry is re-read after this long.
UNKNOWN_EXPIRY_S = 300


class TokenFileCredential:
    """An azure-core ``TokenCredential`` reading the token from a file at every request, so a
    rotated token is used as soon as it is written. The token never reaches a log."""

    def __init__(self, path: str):
        self.path = Path(path)

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        try:
            token = self.path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise InfrastructureError(f"token file {self.path} unreadable: {type(error).__name__}") from None
        if not token:
            raise InfrastructureError(f"token file {self.path} is empty")
        return AccessToken(token, jwt_expiry(token) or int(time.time()) + UNKNOWN_EXPIRY_S)


def jwt_expiry(token: str) -> int | None:
    """The ``exp`` claim of a JWT, if the token is one (nothing is verified: Kusto does that)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        expiry = claims.get("exp") if isinstance(claims, dict) else None
        return int(expiry) if isinstance(expiry, (int, float)) and not isinstance(expiry, bool) else None
    except (ValueError, UnicodeDecodeError, OverflowError):
        return None
