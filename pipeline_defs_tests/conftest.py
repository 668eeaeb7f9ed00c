"""The shared fixtures, and each registered domain's own (``support/domains/<domain>.py``)."""

from pathlib import Path

from pipeline_defs.domains import DOMAINS

pytest_plugins = [
    "pipeline_defs_tests.support.fixtures",
    "pipeline_defs_tests.support.eventhub",
    *(
        f"pipeline_defs_tests.support.domains.{domain.name}"
        for domain in DOMAINS
        if (Path(__file__).parent / "support" / "domains" / f"{domain.name}.py").exists()
    ),
]
