"""Topics of one's own: every domain's topics under a unique prefix, found through the registry,
as settings sections, as resources and as the environment a daemon reads."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import dagster as dg

from pipeline_defs.domains import DOMAINS


def _topics_type(domain_settings: type[dg.Config]) -> type[dg.Config] | None:
    field = domain_settings.model_fields.get("topics")
    kind = field.annotation if field is not None else None
    return kind if isinstance(kind, type) and issubclass(kind, dg.Config) else None


def unique_topics(prefix: str) -> SimpleNamespace:
    """``topics.<domain>`` for each domain with topics: its topics config, names prefixed."""
    found: dict[str, Any] = {}
    for domain in DOMAINS:
        kind = _topics_type(domain.settings) if domain.settings else None
        if kind is not None:
            found[domain.name] = kind(**{name: f"{prefix}.{default}" for name, default in kind().model_dump().items()})
    return SimpleNamespace(**found)


def topic_env(topics: SimpleNamespace) -> dict[str, str]:
    """The same topics as ``PIPELINE_<DOMAIN>__TOPICS__<NAME>`` variables."""
    return {
        f"PIPELINE_{domain.upper()}__TOPICS__{name.upper()}": value
        for domain, config in vars(topics).items()
        for name, value in config.model_dump().items()
    }


def ingest_env(**ingest: Any) -> dict[str, str]:
    return {f"PIPELINE_INGEST__{k.upper()}": v if isinstance(v, str) else json.dumps(v) for k, v in ingest.items()}
