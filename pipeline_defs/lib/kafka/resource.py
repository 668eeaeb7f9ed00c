"""Kafka as a Dagster resource: one interface for the local broker and Azure Event Hub.

Every broker call takes a timeout, so a sensor tick or a run never hangs on a dead broker.
Runs read with assign/seek (never subscribe + auto-commit) and commit consumer-group
offsets explicitly, after their Delta commit. The clients are built here; what they do is in
``metadata`` (offsets, groups, topics) and ``records`` (reading ranges, producing).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Optional

import dagster as dg
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
)
from confluent_kafka.admin import AdminClient
from pydantic import PrivateAttr

from pipeline_defs.lib.credentials import TokenFileCredential
from pipeline_defs.lib.kafka.clients import KafkaUnavailableError
from pipeline_defs.lib.kafka.metadata import KafkaMetadata
from pipeline_defs.lib.kafka.records import KafkaRecords
from pipeline_defs.lib.settings import KafkaConnection

_LIBRDKAFKA_LOG = logging.getLogger("librdkafka")
_LOG = logging.getLogger(__name__)
_ADMIN_CLIENTS: dict[tuple, AdminClient] = {}
_ADMIN_LOCK = threading.Lock()
# The producer's own ceiling sits above any topic's, so the topic's limit is the one that counts.
PRODUCER_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class KafkaResource(KafkaMetadata, KafkaRecords, dg.ConfigurableResource):
    """A Kafka cluster. ``sasl_password`` is bound with ``dg.EnvVar`` when the cluster needs it;
    OAUTHBEARER tokens come from azure-identity (``DefaultAzureCredential``), or from a token
    file (``oauth_token_file``)."""

    connection: KafkaConnection
    sasl_password: Optional[str] = None

    _credential: Any = PrivateAttr(default=None)
    _oauth_failure: Optional[str] = PrivateAttr(default=None)
    _session_refused: Optional[str] = PrivateAttr(default=None)
    _prefetched: Optional[tuple[str, float]] = PrivateAttr(default=None)
    _max_bytes: dict[str, int] = PrivateAttr(default_factory=dict)
    _producer: Optional[Producer] = PrivateAttr(default=None)

    # ---- client construction ------------------------------------------------------------
    def client_config(self) -> dict[str, Any]:
        conn = self.connection
        config: dict[str, Any] = {
            "bootstrap.servers": conn.bootstrap_servers,
            "security.protocol": conn.security_protocol,
            "logger": _LIBRDKAFKA_LOG,
            "socket.timeout.ms": int(conn.request_timeout_s * 1000),
        }
        if conn.ssl_ca_location:
            config["ssl.ca.location"] = conn.ssl_ca_location
        if conn.sasl_mechanism:
            config["sasl.mechanisms"] = conn.sasl_mechanism
        if conn.sasl_mechanism == "PLAIN":
            config["sasl.username"] = conn.sasl_username or ""
            config["sasl.password"] = self.sasl_password or ""
        if conn.sasl_mechanism == "OAUTHBEARER":
            if not conn.oauth_scope:
                raise ValueError("OAUTHBEARER needs connection.oauth_scope")
            config["oauth_cb"] = self._oauth_token
            config["error_cb"] = self._on_client_error
        return config

    def _oauth_token(self, _oauthbearer_config: str) -> tuple[str, float]:
        """librdkafka's ``oauth_cb``: the token ``_serve_oauth`` just fetched, else a fresh one."""
        prefetched, self._prefetched = self._prefetched, None
        return prefetched or self._fetch_token()

    def _fetch_token(self) -> tuple[str, float]:
        if self._credential is None and self.connection.oauth_token_file:
            self._credential = TokenFileCredential(self.connection.oauth_token_file)
        elif self._credential is None:
            from azure.identity import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
        scope = self.connection.oauth_scope
        # confluent-kafka drops what this callback raises (librdkafka only learns that no token
        # came), so the reason is logged and kept for _serve_oauth; never the token itself.
        try:
            token = self._credential.get_token(scope)
        except Exception as exc:
            self._oauth_failure = f"the credential gave no token for {scope}: {type(exc).__name__}: {str(exc)[:500]}"
            _LOG.error(self._oauth_failure)
            raise
        if float(token.expires_on) <= time.time():
            expired = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(token.expires_on))
            self._oauth_failure = f"the credential's token for {scope} expired at {expired}"
            _LOG.error(self._oauth_failure)
            raise ValueError(self._oauth_failure)
        self._oauth_failure = None
        return token.token, float(token.expires_on)

    def _on_client_error(self, error: KafkaError) -> None:
        """librdkafka reports a refused session (an expired or rejected token, a refresh the
        credential refused) only here; readers see no record and would wait forever."""
        if error.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
            self._session_refused = f"{error.str()[:300]}; {self._oauth_failure or 'the broker refused the token'}"
            _LOG.error(f"{self.connection.bootstrap_servers}: OAUTHBEARER session refused: {self._session_refused}")

    def raise_if_refused(self) -> None:
        """Fail the step once the broker refused this cluster's session: no record is to blame."""
        if self._session_refused is not None:
            raise KafkaUnavailableError(f"{self.connection.bootstrap_servers} refused the session: {self._session_refused}")

    def _serve_oauth(self, client_type: Any, config: dict[str, Any]) -> Any:
        """``client_type(config)``, with its first OAUTHBEARER token. The credential is asked
        first, here: confluent-kafka drops what ``oauth_cb`` raises while it builds a client (and
        leaves the interpreter's error state for the next callback to trip on), then fails after
        10 s; a refused or expired token is an infrastructure error naming the reason at once."""
        if self.connection.sasl_mechanism != "OAUTHBEARER":
            return client_type(config)
        try:
            self._prefetched = self._fetch_token()
        except Exception:  # noqa: BLE001 - whatever the credential raises, its reason is recorded
            raise KafkaUnavailableError(
                f"no OAUTHBEARER token for {self.connection.bootstrap_servers}: {self._oauth_failure}"
            ) from None
        try:
            client = client_type(config)
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() != KafkaError.SASL_AUTHENTICATION_FAILED:
                raise
            reason = self._oauth_failure or error.str()
            raise KafkaUnavailableError(f"no OAUTHBEARER token for {self.connection.bootstrap_servers}: {reason}") from exc
        client.poll(0)  # librdkafka asks for the first token from poll()
        return client

    def admin(self) -> AdminClient:
        """One admin client per cluster and process: sensors ask for offsets every few seconds,
        and a new client would connect and fetch metadata each time."""
        config = self.client_config()
        key = tuple(sorted((k, v) for k, v in config.items() if isinstance(v, (str, int, float, bool))))
        with _ADMIN_LOCK:
            if key not in _ADMIN_CLIENTS:
                _ADMIN_CLIENTS[key] = self._serve_oauth(AdminClient, config)
            return _ADMIN_CLIENTS[key]

    def consumer(self, group_id: str, **overrides: Any) -> Consumer:
        config = {
            **self.client_config(),
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            **overrides,
        }
        return self._serve_oauth(Consumer, config)

    def producer(self, **overrides: Any) -> Producer:
        config = {
            **self.client_config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.max.bytes": PRODUCER_MAX_MESSAGE_BYTES,
            "message.timeout.ms": int(max(self.connection.request_timeout_s * 3, 30) * 1000),
            **overrides,
        }
        return self._serve_oauth(Producer, config)

    def shared_producer(self) -> Producer:
        """One producer for everything a run sends (dead letters, tasks, retries): an idempotent
        producer costs a broker round trip to start, which a micro-batch should not pay."""
        if self._producer is None:
            self._producer = self.producer()
        return self._producer

    def cached_max_bytes(self) -> dict[str, int]:
        return self._max_bytes
