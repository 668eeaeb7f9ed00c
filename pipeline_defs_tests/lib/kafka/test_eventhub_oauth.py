"""KafkaResource against the Event Hub stand-in (``deploy/stack.sh up eventhub``): SASL_SSL and
OAUTHBEARER with tokens from an azure-core credential, on a broker that checks each token's
``exp`` and ``scope``, ends a session when its token expires (connections.max.reauth.ms) and
shows a certificate signed by the stack's test CA."""

from __future__ import annotations

import itertools
import logging
import re
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from pipeline_defs.lib.ingest.guard import InfrastructureError
from pipeline_defs.lib.kafka.clients import KafkaUnavailableError
from pipeline_defs.lib.kafka.ranges import OffsetRange
from pipeline_defs.lib.kafka.records import OutRecord
from pipeline_defs.lib.kafka.resource import KafkaResource
from pipeline_defs.lib.settings import KafkaConnection
from pipeline_defs_tests.support.eventhub import (
    EXPIRED,
    REFUSED,
    STALE,
    TokenCredentialDouble,
    claims_of,
    eventhub_kafka,
)
from pipeline_defs_tests.support.stack import LocalStack
from pipeline_sim.tokens import unsecured_jws

LIFETIME_S = 10  # short, so that a test sees tokens refreshed twice


def fill(kafka: KafkaResource, topic: str, count: int, prefix: str = "e") -> list[bytes]:
    values = [f"{prefix}{i}".encode() for i in range(count)]
    assert kafka.produce(topic, [OutRecord(value=v, key=v) for v in values], timeout_s=20) == count
    return values


def read_all(kafka: KafkaResource, topic: str, group: str, timeout_s: float = 20) -> list[bytes]:
    states = kafka.partition_states(topic, 10)
    ranges = [OffsetRange(topic, p, s.low, s.high) for p, s in states.items()]
    return [m.value() or b"" for batch in kafka.read_ranges(ranges, group, 1000, timeout_s) for m in batch]


def test_records_go_in_and_out_over_sasl_ssl_with_tokens_for_the_event_hub_scope(
    eventhub_stack: LocalStack, eventhub_admin: KafkaResource, eventhub_events_topic: str
):
    credential = TokenCredentialDouble(lifetime_s=15)
    kafka = eventhub_kafka(eventhub_stack, credential)
    topic, group = eventhub_events_topic, f"g-{uuid.uuid4().hex[:6]}"

    sent = fill(kafka, topic, 20)
    assert sorted(read_all(kafka, topic, group)) == sorted(sent)
    ends = {(topic, p): s.high for p, s in kafka.partition_states(topic, 10).items()}
    kafka.commit_offsets(group, ends)

    # What the group committed is on the stand-in, as another client with its own token sees it.
    assert eventhub_admin.committed_offsets(group, topic, [0, 1, 2], 10) == {p: o for (_, p), o in ends.items()}
    assert credential.count >= 1
    assert set(credential.scopes) == {(eventhub_stack.eventhub_scope,)}
    assert {claims_of(t.token)["scope"] for t in credential.handed_out} == {eventhub_stack.eventhub_scope}


def test_tokens_are_refreshed_before_they_expire_and_every_client_keeps_working(
    eventhub_stack: LocalStack, eventhub_events_topic: str
):
    topic = eventhub_events_topic
    credentials = {role: TokenCredentialDouble(lifetime_s=LIFETIME_S, subject=role) for role in ("producer", "consumer", "admin")}
    producing, consuming, asking = (eventhub_kafka(eventhub_stack, credentials[role]) for role in credentials)
    consumer = consuming.consumer(f"g-{uuid.uuid4().hex[:6]}")
    consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
    first_expiry = max(c.handed_out[0].expires_on for c in credentials.values() if c.handed_out)
    # Two whole lifetimes past the first tokens' expiry: each client on its third token at least.
    worked_until, deadline = first_expiry + LIFETIME_S + 1, time.time() + 4 * LIFETIME_S + 15
    sent: list[bytes] = []
    received: list[bytes] = []
    try:
        while True:
            value = f"r{len(sent)}".encode()
            producing.produce(topic, [OutRecord(value=value, key=value)], timeout_s=10)  # raises unless acknowledged
            sent.append(value)
            received += [m.value() or b"" for m in consumer.consume(100, timeout=0.5) if m.error() is None]
            high = sum(s.high for s in asking.partition_states(topic, 10).values())
            counts = {role: c.count for role, c in credentials.items()}
            if time.time() > worked_until and min(counts.values()) >= 3 and sorted(received) == sorted(sent):
                break
            assert time.time() < deadline, (
                f"after {4 * LIFETIME_S + 15} s: tokens handed out {counts} (want 3 each), "
                f"{len(received)} of {len(sent)} records read back, log end {high}"
            )
    finally:
        consumer.close()
    assert high == len(sent)
    for credential in credentials.values():  # each token asked for before the one before expired
        tokens = credential.handed_out
        assert all(claims_of(new.token)["iat"] < old.expires_on < new.expires_on for old, new in itertools.pairwise(tokens))


def test_a_refused_or_an_expired_token_is_an_infrastructure_error_naming_it_and_nothing_is_committed(
    eventhub_stack: LocalStack, eventhub_admin: KafkaResource, eventhub_events_topic: str
):
    topic, group, scope = eventhub_events_topic, f"g-{uuid.uuid4().hex[:6]}", eventhub_stack.eventhub_scope
    eventhub_admin.commit_offsets(group, {(topic, 0): 1})
    complaints = {
        REFUSED: f"the credential gave no token for {scope}: ClientAuthenticationError: AADSTS700016",
        EXPIRED: f"the credential's token for {scope} expired at ",
    }

    def commit_with(mode: str) -> tuple[Exception | None, TokenCredentialDouble]:
        credential = TokenCredentialDouble()
        credential.mode = mode
        try:
            eventhub_kafka(eventhub_stack, credential).commit_offsets(group, {(topic, 0): 5, (topic, 1): 5})
        except Exception as exc:
            return exc, credential
        return None, credential

    # confluent-kafka gives up on a client without a token after 10 s: both cases at once.
    with ThreadPoolExecutor(2) as pool:
        outcomes = dict(zip(complaints, pool.map(commit_with, complaints)))

    for mode, (failure, credential) in outcomes.items():
        assert isinstance(failure, KafkaUnavailableError), f"{mode}: {failure!r}"
        assert isinstance(failure, InfrastructureError)  # the step fails and retries; no record is blamed
        message = str(failure)
        assert message.startswith(f"no OAUTHBEARER token for {eventhub_stack.eventhub_bootstrap_servers}: "), message
        assert complaints[mode] in message, message
        assert not any(t.token in message for t in credential.handed_out)
    assert eventhub_admin.committed_offsets(group, topic, [0, 1, 2], 10) == {0: 1}


def test_the_broker_refuses_a_token_past_its_exp_even_when_the_credential_calls_it_valid(
    eventhub_stack: LocalStack, eventhub_admin: KafkaResource, eventhub_events_topic: str, caplog: pytest.LogCaptureFixture
):
    topic, group = eventhub_events_topic, f"g-{uuid.uuid4().hex[:6]}"
    fill(eventhub_admin, topic, 3)
    credential = TokenCredentialDouble()
    credential.mode = STALE  # a token whose exp passed, handed out as good for 15 s (a skewed clock)
    kafka = eventhub_kafka(eventhub_stack, credential, request_timeout_s=2)

    with caplog.at_level(logging.ERROR, "librdkafka"), pytest.raises(KafkaUnavailableError, match="refused the session"):
        list(kafka.read_ranges([OffsetRange(topic, p, 0, 1) for p in range(3)], group, 100, 60))

    # The run fails with the broker's reason (librdkafka reports it through error_cb), not after a timeout.
    assert 'SASL authentication error: {"status":"invalid_token"}' in caplog.text
    assert eventhub_admin.committed_offsets(group, topic, [0, 1, 2], 10) == {}


def test_a_credential_refused_at_refresh_ends_the_session_when_the_token_expires(
    eventhub_stack: LocalStack, eventhub_events_topic: str, caplog: pytest.LogCaptureFixture
):
    topic = eventhub_events_topic
    credential = TokenCredentialDouble(lifetime_s=8)
    kafka = eventhub_kafka(eventhub_stack, credential, request_timeout_s=3)
    fill(kafka, topic, 1, "before")
    credential.mode = REFUSED  # e.g. the managed identity lost its role while a run is going
    expiry = credential.handed_out[-1].expires_on

    with caplog.at_level(logging.ERROR):
        while True:
            try:
                kafka.produce(topic, [OutRecord(value=b"after")], timeout_s=2)
            except KafkaUnavailableError as refused:  # the broker refused the session: named, not a bare delivery failure
                assert "refused the session" in str(refused)
                break
            assert time.time() < expiry + 20, (
                f"still producing 20 s after the token expired (asked {len(credential.scopes)} times)"
            )
            time.sleep(0.5)

    # The session outlived the refusal until the token expired (the broker re-authenticates
    # connections), and the refresh that failed is logged with its reason.
    assert time.time() >= expiry - 2
    assert f"the credential gave no token for {eventhub_stack.eventhub_scope}: ClientAuthenticationError" in caplog.text
    assert re.search(r"SASL (authentication error|OAUTHBEARER mechanism handshake failed)", caplog.text), caplog.text


def other_ca(directory: Path) -> Path:
    pem = directory / "other-ca.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=not the stack's CA"),
            *("-keyout", str(directory / "other-ca.key"), "-out", str(pem)),
        ],
        check=True,
        capture_output=True,
    )
    return pem


def test_the_brokers_certificate_is_verified_against_the_ca(
    eventhub_stack: LocalStack,
    eventhub_admin: KafkaResource,
    eventhub_events_topic: str,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
):
    topic = eventhub_events_topic
    sent = fill(eventhub_admin, topic, 1)
    (partition,) = [p for p, s in eventhub_admin.partition_states(topic, 10).items() if s.high]
    ranges = [OffsetRange(topic, partition, 0, 1)]
    for ca in (None, str(other_ca(tmp_path))):  # the system's CAs; a CA that did not sign it
        caplog.clear()
        kafka = eventhub_kafka(eventhub_stack, TokenCredentialDouble(), request_timeout_s=2, ssl_ca_location=ca)
        with caplog.at_level(logging.ERROR, "librdkafka"), pytest.raises(KafkaUnavailableError, match="timed out"):
            list(kafka.read_ranges(ranges, f"g-{uuid.uuid4().hex[:6]}", 100, 2))
        assert "certificate verify failed" in caplog.text, ca
    # The stack's CA, and the same record reads.
    trusting = eventhub_kafka(eventhub_stack, TokenCredentialDouble())
    assert [m.value() for b in trusting.read_ranges(ranges, f"g-{uuid.uuid4().hex[:6]}", 100, 10) for m in b] == sent


def test_a_token_file_feeds_the_session_as_a_sidecar_would(
    eventhub_stack: LocalStack, eventhub_events_topic: str, tmp_path: Path
):
    """What ``deploy/run.sh --source eventhub`` does: ``oauth_token_file``, re-read at each refresh."""
    token_file = tmp_path / "token"
    now = int(time.time())
    token_file.write_text(
        unsecured_jws({"sub": "pipeline", "iat": now, "exp": now + 600, "scope": eventhub_stack.eventhub_scope})
    )
    kafka = KafkaResource(
        connection=KafkaConnection(
            bootstrap_servers=eventhub_stack.eventhub_bootstrap_servers,
            security_protocol="SASL_SSL",
            sasl_mechanism="OAUTHBEARER",
            oauth_scope=eventhub_stack.eventhub_scope,
            oauth_token_file=str(token_file),
            ssl_ca_location=str(eventhub_stack.eventhub_ca_path),
        )
    )
    assert fill(kafka, eventhub_events_topic, 3, "file") == [b"file0", b"file1", b"file2"]
    token_file.write_text("")  # a sidecar that lost its token: a clear failure for the next client
    with pytest.raises(KafkaUnavailableError, match=r"token file .* is empty"):
        kafka.consumer(f"g-{uuid.uuid4().hex[:6]}")
