"""Partitions shared by every Kafka-fed asset."""

import dagster as dg

# Daily partitions by ingestion date: at 1,000 events/s a year is 365 partitions, far below
# what Dagster handles well; the Kafka batch a run covers lives in its tags and rows instead.
# end_offset=1 makes today's partition available to the sensor's runs.
ingestion_days = dg.DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC", end_offset=1)
