"""Test and demo tooling, outside the product package: realistic XACT and ClaimX events, an
attachment host, the ClaimX API double and its media host (``pipeline-sim``). The code location
never imports it; tests, benchmarks and ``deploy/run.sh`` do."""
