"""The Event Hub stand-in (``deploy/stack.sh up eventhub``): a second Kafka cluster whose only
listener is SASL_SSL + OAUTHBEARER, and a token credential that mints the unsecured JWS tokens
its validator accepts, short-lived so that tests see them refreshed."""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.settings import KafkaConnection
from pipeline_defs_tests.support.stack import LocalStack
from pipeline_sim.tokens import unsecured_jws

VALID = "valid"
EXPIRED = "expired"  # the token, and what the credential says of it, expired a minute ago
STALE = "stale"  # the token expired a minute ago, the credential says it is good for its lifetime
REFUSED = "refused"  # get_token raises, as azure-identity does when the identity is refused


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class TokenCredentialDouble:
    """azure-core's ``TokenCredential``: ``get_token(*scopes) -> AccessToken(token, expires_on)``,
    with tokens that expire ``lifetime_s`` after they are handed out. ``mode`` switches it to
    expired tokens or to refusing (``ClientAuthenticationError``). Thread-safe: librdkafka asks
    from whichever thread serves a client's callbacks."""

    def __init__(self, lifetime_s: int = 15, subject: str = "pipeline-test") -> None:
        self.lifetime_s = lifetime_s
        self.subject = subject
        self.mode = VALID
        self.scopes: list[tuple[str, ...]] = []
        self.handed_out: list[AccessToken] = []
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        """How many tokens were handed out (refusals not counted)."""
        with self._lock:
            return len(self.handed_out)

    def get_token(self, *scopes: str, **_kwargs: object) -> AccessToken:
        with self._lock:
            self.scopes.append(scopes)
            if self.mode == REFUSED:
                raise ClientAuthenticationError(message="AADSTS700016: the test identity is refused")
            now = int(time.time())
            expires_on = now - 60 if self.mode == EXPIRED else now + self.lifetime_s
            exp = now - 60 if self.mode in (EXPIRED, STALE) else expires_on
            claims = {"sub": self.subject, "iat": now - 120 if exp < now else now, "exp": exp, "scope": " ".join(scopes)}
            token = AccessToken(unsecured_jws(claims), expires_on)
            self.handed_out.append(token)
            return token


# Dagster rebuilds a resource from its config when it hands it to a sensor or a run, dropping
# what was set on the object: the credential is found again by key.
_CREDENTIALS: dict[str, TokenCredentialDouble] = {}
# KafkaResource keeps one admin client per process and client configuration, whichever
# credential it was built with; each resource made here differs by a millisecond of socket
# timeout, so its admin client asks its own credential.
_DISTINCT_MS = itertools.count(1)


class EventHubKafka(KafkaResource):
    """``KafkaResource`` as it is, its credential (``_credential``, otherwise azure-identity's)
    the double registered under ``credential_key``."""

    credential_key: str = ""

    def _fetch_token(self) -> tuple[str, float]:
        if self._credential is None and self.credential_key:
            self._credential = _CREDENTIALS[self.credential_key]
        return super()._fetch_token()


def eventhub_kafka(
    stack: LocalStack, credential: TokenCredentialDouble, request_timeout_s: float = 5.0, **changes: object
) -> KafkaResource:
    """A ``KafkaResource`` for the stand-in's SASL_SSL listener, taking its tokens from
    ``credential`` (as it would from ``DefaultAzureCredential``); ``changes`` alter the connection."""
    connection = KafkaConnection(
        **{  # type: ignore[arg-type]  # the fields' own types, checked by pydantic
            "bootstrap_servers": stack.eventhub_bootstrap_servers,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "OAUTHBEARER",
            "oauth_scope": stack.eventhub_scope,
            "ssl_ca_location": str(stack.eventhub_ca_path),
            "request_timeout_s": request_timeout_s + (next(_DISTINCT_MS) + 0.5) / 1000,
            **changes,
        }
    )
    key = uuid.uuid4().hex
    _CREDENTIALS[key] = credential
    resource = EventHubKafka(connection=connection, credential_key=key)
    resource._credential = credential
    return resource


@pytest.fixture(scope="session")
def eventhub_stack(test_stack: LocalStack) -> LocalStack:
    """The test stack with its Event Hub stand-in up (started on demand: it is not part of a
    plain ``up``)."""
    test_stack.run("up", "eventhub")
    return test_stack


@pytest.fixture
def eventhub_credential() -> TokenCredentialDouble:
    return TokenCredentialDouble(lifetime_s=15)


@pytest.fixture
def eventhub(eventhub_stack: LocalStack, eventhub_credential: TokenCredentialDouble) -> KafkaResource:
    """The stand-in as a resource, its tokens from ``eventhub_credential``."""
    return eventhub_kafka(eventhub_stack, eventhub_credential)


@pytest.fixture
def eventhub_admin(eventhub_stack: LocalStack) -> KafkaResource:
    """The stand-in with a credential of its own (long-lived tokens), for creating topics and
    looking at what a test did, whatever the test's credential hands out."""
    return eventhub_kafka(eventhub_stack, TokenCredentialDouble(lifetime_s=3600, subject="test-admin"), request_timeout_s=10)


def eventhub_topic(admin: KafkaResource, partitions: int = 3) -> Iterator[str]:
    """A fresh topic on the stand-in, deleted afterwards."""
    name = f"test.{uuid.uuid4().hex[:8]}.events.raw"
    admin.create_topics([name], partitions)
    yield name
    admin.admin().delete_topics([name], operation_timeout=30)


@pytest.fixture
def eventhub_events_topic(eventhub_admin: KafkaResource) -> Iterator[str]:
    yield from eventhub_topic(eventhub_admin)
