"""Stream health: how far behind a Kafka-fed table is, and where alerts go."""
