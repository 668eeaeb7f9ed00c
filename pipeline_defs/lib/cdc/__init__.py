"""Change data capture: Debezium's Cassandra change events (their envelope, the CQL types) and
their application to PostgreSQL tables, exactly once, newest writetime wins."""
