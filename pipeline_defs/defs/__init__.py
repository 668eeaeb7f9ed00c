"""One folder per domain; each registers what it owns in its ``__init__.DOMAIN``."""
