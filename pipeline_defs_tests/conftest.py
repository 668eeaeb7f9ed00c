"""The shared fixtures, and each registered domain's own (``support/domains/<domain>.py``)."""

from pathlib import Path

from hypothesis import settings

from pipeline_defs.domains import DOMAINS

# Property tests judge results, never speed: on a busy CI machine an example may take any time.
settings.register_profile("no_deadline", deadline=None)
settings.load_profile("no_deadline")

pytest_plugins = [
    "pipeline_defs_tests.support.fixtures",
    "pipeline_defs_tests.support.eventhub",
    *(
        f"pipeline_defs_tests.support.domains.{domain.name}"
        for domain in DOMAINS
        if (Path(__file__).parent / "support" / "domains" / f"{domain.name}.py").exists()
    ),
]
