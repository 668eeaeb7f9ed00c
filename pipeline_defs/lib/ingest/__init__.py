"""The offset-range protocol: Kafka feeds, the sensors that plan ranges and the gates that hold
them, the runs that consume them through a RecordSink under the per-record guard, Delta
watermarks and commits, event logs, tasks and where failed ones go."""
