"""Claims pipelines on Kafka, Delta Lake and OneLake, as a Dagster code location."""
