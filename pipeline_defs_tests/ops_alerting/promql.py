"""Just enough PromQL reading for the contract checks: which metric names and label names an
expression uses. Whether it parses at all is for the real Prometheus to say (``query`` in
``pipeline_defs_tests.support.prometheus``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "inf", "nan"}
AGGREGATION_CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w(])(?!\s*\()")
RANGE = re.compile(r"\[[^\]]*\]")
# Grafana's variables, as a dashboard expression may hold them, and what stands in for them.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
}
GRAFANA_VARIABLE = re.compile(r"\$\{?([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?\}?")


def expand_grafana(expr: str) -> str:
    """``expr`` with Grafana's interval variables replaced by durations and template variables
    (``$topic``, ``${dlq}``: used inside ``=~"..."`` matchers) by ``.*``."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return GRAFANA_VARIABLE.sub(".*", expr)


@dataclass
class Usage:
    metrics: set[str] = field(default_factory=set)
    # metric -> label names its selectors match on
    matcher_labels: dict[str, set[str]] = field(default_factory=dict)
    # label names of by/without/on/ignoring/group_* clauses
    clause_labels: set[str] = field(default_factory=set)


def usage(expr: str) -> Usage:
    found = Usage()
    text = expand_grafana(expr)
    for match in SELECTOR.finditer(text):
        name = match.group(1)
        labels = set(MATCHER_LABEL.findall(STRING.sub('""', match.group(2))))
        if name:
            found.matcher_labels.setdefault(name, set()).update(labels - {"__name__"})
    text = STRING.sub('""', text)
    for match in AGGREGATION_CLAUSE.finditer(text):
        found.clause_labels.update(label.strip() for label in match.group(2).split(",") if label.strip())
    text = AGGREGATION_CLAUSE.sub(" ", text)
    text = SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text)
    text = RANGE.sub(" ", text)
    for name in IDENTIFIER.findall(text):
        if name.lower() not in KEYWORDS:
            found.metrics.add(name)
    found.metrics.update(found.matcher_labels)
    return found
