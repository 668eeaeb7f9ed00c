"""Redaction of probe errors (they reach /health/ready, Prometheus and logs): every form in
which a client library or a config quotes a credential, checked on examples and as a property
over random secrets in each form."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pipeline_defs.ops.health import describe_error, redact

EXAMPLES = [
    (
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey=S3cr3tKeyBase64==",
        "S3cr3tKeyBase64",
        "SharedAccessKeyName=Root",
    ),
    ("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=abc123==;EndpointSuffix=x", "abc123", "AccountName=acct"),
    ("SharedAccessSignature sr=x&sig=SECRETSIG&se=1", "SECRETSIG", "sr=x"),
    ("{'sasl.password': 'hunter2', 'bootstrap.servers': 'x:9093'}", "hunter2", "'bootstrap.servers': 'x:9093'"),
    ('{"password": "hunter2", "user": "u"}', "hunter2", '"user": "u"'),
    ("password: hunter2", "hunter2", "password:"),
    ("host=db password=hunter2 user=u", "hunter2", "user=u"),
    ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz", "Authorization:"),
    ("Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9", "Bearer"),
    (
        "https://contoso.webhook.office.com/webhookb2/1111-2222@3333-4444/IncomingWebhook/SECRETID/5555-6666",
        "SECRETID",
        "https://contoso.webhook.office.com/",
    ),
    (
        "https://prod-12.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?api-version=1&sv=1.0&sig=SIG",
        "workflows/abc",
        "logic.azure.com:443/",
    ),
    (
        "https://e1.environment.api.powerplatform.com:443/powerautomate/automations/direct/workflows/f00?sig=SIG",
        "f00",
        "api.powerplatform.com:443/",
    ),
    ("could not connect to postgresql://user:p@ss@db/x", "ss@db", "@db/x"),
    ("postgresql://dagster:pg%40ss@db:5432/dagster", "pg%40ss", "postgresql://***@db:5432/dagster"),
]


@pytest.mark.parametrize(("text", "secret", "kept"), EXAMPLES)
def test_each_credential_form_is_redacted_and_the_rest_kept(text: str, secret: str, kept: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned and "***" in cleaned
    assert kept in cleaned


def test_all_secret_keys_of_a_dict_repr_go() -> None:
    cleaned = redact("{'client_secret': 's3cr3t', 'api_key': 'k3y', 'apikey': 'k4y', 'access_token': 't0k3n'}")
    assert not any(s in cleaned for s in ("s3cr3t", "k3y", "k4y", "t0k3n"))


def test_plain_errors_are_left_alone() -> None:
    text = "KafkaException: broker x:9093 down; key=claim-1 topic=xact-events https://host:8080/api/v1"
    assert redact(text) == text


def test_describe_error_redacts_before_it_cuts() -> None:
    exc = RuntimeError("x" * 280 + " postgresql://user:p@ssw0rd@db/x")
    assert "ssw0rd" not in describe_error(exc) and len(describe_error(exc)) <= 300


# Characters a value can hold where that form has no quoting: not its separators, nor whitespace.
_BARE = st.text(st.sampled_from(sorted(set(string.printable) - set(string.whitespace) - set(";&"))), min_size=8)
_NO_SPACE = st.text(st.sampled_from(sorted(set(string.printable) - set(string.whitespace))), min_size=8)
_ANY = st.text(st.sampled_from(string.printable), min_size=8)

TEMPLATES = [
    (_BARE, lambda s: f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey={s}"),
    (_BARE, lambda s: f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={s};EndpointSuffix=core.windows.net"),
    (_BARE, lambda s: f"Endpoint=sb://ns/;SharedAccessSignature=SharedAccessSignature sr=ns&sig={s}&se=1"),
    (_BARE, lambda s: f"https://a.blob.core.windows.net/c/b?sv=2022&sig={s}&se=2026"),
    (_BARE, lambda s: f"password: {s}"),
    (_BARE, lambda s: f"host=db password={s} user=u"),
    (_BARE, lambda s: f"GET /x?apikey={s}&y=1"),
    (_ANY, lambda s: repr({"sasl.password": s, "bootstrap.servers": "x:9093"})),
    (_ANY, lambda s: repr({"client_secret": s})),
    (_ANY, lambda s: json.dumps({"password": s, "user": "u"})),
    (_ANY, lambda s: json.dumps({"api_key": s})),
    (_ANY, lambda s: repr({"Authorization": f"Bearer {s}"})),
    (_NO_SPACE, lambda s: f"Bearer {s}"),
    (_NO_SPACE, lambda s: f"Authorization: Bearer {s}"),
    (_NO_SPACE, lambda s: f"https://contoso.webhook.office.com/webhookb2/{s}/IncomingWebhook/x/y"),
    (_NO_SPACE, lambda s: f"https://prod-1.westeurope.logic.azure.com:443/workflows/{s}/triggers?sig={s}"),
    (_NO_SPACE, lambda s: f"failed: postgresql://dagster:{s}@db:5432/dagster (timeout)"),
]


@given(st.data())
@pytest.mark.parametrize("index", range(len(TEMPLATES)))
def test_a_random_secret_never_survives_redaction(index: int, data: st.DataObject) -> None:
    strategy, template = TEMPLATES[index]
    secret = data.draw(strategy)
    assume(secret not in template(""))  # a secret that the template's own text spells proves nothing
    assert secret not in redact(template(secret))
