"""Kafka as a resource: its clients, what a cluster says about offsets and groups, reading exact
offset ranges and producing acknowledged records; the pure planning of offset ranges."""
