"""Kusto (Azure Data Explorer, Fabric Eventhouse): the query resource, its credentials and the
poll windows of a table read by ingestion time."""
