"""PostgreSQL as a Dagster resource: connections made at use, behind a circuit breaker, and its
failures mapped to ``InfrastructureError`` so a step's retry policy runs it again."""
