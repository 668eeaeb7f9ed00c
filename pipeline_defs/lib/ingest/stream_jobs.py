"""Streaming runs in Dagster: per Kafka-fed asset, a job whose one op consumes continuously
(``Streamer``), and a sensor that keeps exactly one such run alive.

The run reports what it committed as materializations of the asset's day partitions, at most
once per ``report_interval_s``, with the same metadata and checks as a batch run plus latency
percentiles. A failed blocking check ends the run (so downstream waits, as in the batch path);
the sensor starts the next generation, pausing like a stalled range after repeated failures.
Terminate in the UI stops it cleanly: the micro-batch in hand is committed, then the run ends.
"""

import time
from collections.abc import Iterable, Iterator, Sequence, Set
from typing import Any, Optional, Protocol

import dagster as dg

from pipeline_defs.lib.delta.checks import RunScope
from pipeline_defs.lib.ingest.feeds import KafkaFeed
from pipeline_defs.lib.ingest.planning import IN_FLIGHT, failed_check, stalled
from pipeline_defs.lib.ingest.sink import IngestReport, RecordSink
from pipeline_defs.lib.ingest.stream import StopSignal, Streamer, StreamInterval, percentile
from pipeline_defs.lib.kafka.ranges import encode_ranges
from pipeline_defs.lib.settings import IngestConfigResource

STREAM_TAG = "kafka/stream"  # on streaming runs: the asset whose feed they consume
# How soon a stopped or failed streaming run is replaced (the batch sensor covers the gap, so a
# minute costs no latency); every tick builds the sensor's resources, a cost the idle pipeline pays.
KEEP_ALIVE_INTERVAL_S = 59

RunResult = dg.MaterializeResult | dg.AssetCheckResult


class StreamableAsset(Protocol):
    """A Kafka-fed asset as its batch runs and its streaming run share it."""

    @property
    def feed(self) -> KafkaFeed: ...

    @property
    def resource_keys(self) -> Set[str]: ...

    def sink(self, resources: Any) -> RecordSink: ...

    def results(self, resources: Any, sink: RecordSink, report: IngestReport, scope: RunScope) -> Iterable[RunResult]: ...


def stream_job_name(feed: KafkaFeed) -> str:
    return f"{feed.asset_name}_stream_job"


def build_stream(
    asset: StreamableAsset,
    *,
    blocking: Sequence[dg.AssetCheckKey] = (),
    gated_by: Sequence[dg.AssetCheckKey] = (),
) -> tuple[dg.JobDefinition, dg.SensorDefinition]:
    """The streaming job of ``asset`` and the sensor that keeps one run of it alive.
    ``blocking``: the asset's own blocking checks; ``gated_by``: upstream ones it waits on."""
    feed = asset.feed

    @dg.op(
        name=f"{feed.asset_name}_stream",
        required_resource_keys={"lake", "ingest", *asset.resource_keys},
        out={},
        description=f"Consumes {feed.asset_name}'s Kafka feed continuously, committing micro-batches.",
    )
    def _stream(context: dg.OpExecutionContext) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
        resources = context.resources
        config: IngestConfigResource = resources.ingest
        topics = [t.name for t in feed.topics_of(resources) if t.delay_s is None]
        streamer = Streamer(
            topics=topics,
            source=getattr(resources, feed.cluster),
            lake=resources.lake,
            group_id=feed.group_id(config),
            run_id=context.run.run_id,
            new_sink=lambda: asset.sink(resources),
            ingest=config.ingest,
            log=context.log,
        )
        stop, deadline = StopSignal(), time.monotonic() + config.ingest.stream.max_run_s
        with streamer:
            try:
                while True:
                    # A stop waits until the interval is committed and its report built. Dagster
                    # reinstalls its own handler around every resumption of this generator, so the
                    # report is yielded after listening, and a stop while Dagster stores it is
                    # Dagster's interrupt (below).
                    with stop.listening():
                        interval = streamer.next_interval(stop, deadline, lambda: failed_check(context.instance, gated_by))
                        events, failed = _report(asset, resources, interval, blocking)
                    yield from events
                    if failed:
                        raise dg.Failure(
                            description=f"blocking check {failed} failed on offsets {encode_ranges(interval.ranges)}; "
                            "the stream stops so downstream waits, and its sensor starts the next run",
                        )
                    if stop.requested:
                        raise dg.DagsterExecutionInterruptedError()
                    if time.monotonic() >= deadline:
                        context.log.info("max_run_s reached: ending cleanly; the stream sensor starts the next run")
                        return
            except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt, GeneratorExit):
                # Ours, Dagster's, or the generator closed by Dagster after its interrupt: the
                # micro-batches are committed either way.
                context.log.info("stop requested: the last micro-batch is committed; ending the run")
                raise

    @dg.job(
        name=stream_job_name(feed),
        executor_def=dg.in_process_executor,  # the op runs in the run's main thread, where signals arrive
        tags={STREAM_TAG: feed.asset_name, "dagster/max_retries": "0"},  # the sensor restarts it, not run retries
        description=f"The streaming run of {feed.asset_name}: kept alive by {feed.asset_name}_stream_sensor.",
    )
    def _job() -> None:
        _stream()

    return _job, _keep_alive_sensor(feed, _job)


def _report(
    asset: StreamableAsset, resources: Any, interval: StreamInterval, blocking: Sequence[dg.AssetCheckKey]
) -> tuple[list[dg.AssetMaterialization | dg.AssetCheckEvaluation], Optional[str]]:
    """The interval as materializations of its day and check evaluations, and the first failed
    blocking check, if any. An idle interval reports nothing."""
    report = interval.report
    events: list[dg.AssetMaterialization | dg.AssetCheckEvaluation] = []
    if report.messages_read == 0:
        return events, None
    own = dg.AssetKey(asset.feed.asset_name)
    day = interval.day.isoformat()
    failed = None
    for result in asset.results(resources, interval.sink, report, RunScope(None, tuple(interval.ranges))):
        if isinstance(result, dg.MaterializeResult):
            key = result.asset_key or own
            metadata = {**(result.metadata or {}), **(_stream_metadata(interval) if key == own else {})}
            events.append(dg.AssetMaterialization(asset_key=key, partition=day, metadata=metadata))
            checks: Iterable[dg.AssetCheckResult] = result.check_results or []
        else:
            key, checks = own, [result]
        for check in checks:
            check_key = dg.AssetCheckKey(dg.AssetKey.from_coercible(check.asset_key or key), check.check_name or "")
            events.append(
                dg.AssetCheckEvaluation(
                    asset_key=check_key.asset_key,
                    check_name=check_key.name,
                    passed=check.passed,
                    metadata=check.metadata,
                    severity=check.severity,
                    description=check.description,
                    blocking=check_key in blocking,
                )
            )
            if not check.passed and check_key in blocking and failed is None:
                failed = check_key.to_user_string()
    return events, failed


def _stream_metadata(interval: StreamInterval) -> dict[str, Any]:
    latencies = interval.latencies_s
    return {
        "mode": "streaming",
        "interval_s": round(time.monotonic() - interval.started, 1),
        "latency_p50_s": percentile(latencies, 0.50),
        "latency_p95_s": percentile(latencies, 0.95),
        "latency_p99_s": percentile(latencies, 0.99),
        "committed_ranges": encode_ranges(interval.ranges) or "(none)",
        "micro_batches": interval.micro_batches,
        "seconds_by_stage": dg.MetadataValue.json({k: round(v, 3) for k, v in sorted(interval.seconds_by_stage.items())}),
        "lag_total": sum(interval.lag.values()),
        "lag_by_partition": dg.MetadataValue.json({f"{t}[{p}]": n for (t, p), n in sorted(interval.lag.items())}),
    }


def _keep_alive_sensor(feed: KafkaFeed, job: dg.JobDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{feed.asset_name}_stream_sensor",
        job=job,
        minimum_interval_seconds=KEEP_ALIVE_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={"ingest"},
        description=(
            f"Keeps one streaming run of {feed.asset_name} alive while ingest.stream.enabled is on. "
            f"Stop this sensor (and terminate the run) to hand {feed.asset_name} back to its batch sensors."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        ingest = context.resources.ingest.ingest
        if not ingest.stream.enabled:
            return dg.SkipReason("streaming is off (ingest.stream.enabled); the batch sensors plan runs")
        running = context.instance.get_runs(dg.RunsFilter(job_name=job.name, statuses=IN_FLIGHT), limit=1)
        if running:
            return dg.SkipReason(f"streaming run {running[0].run_id} is {running[0].status.value.lower()}")
        waiting = stalled(context.instance, job.name, ingest.stall_after_failed_runs, ingest.stall_probe_interval_s)
        if waiting is not None:
            return dg.SkipReason(waiting)
        cursor = context.cursor or ""
        generation = (int(cursor) if cursor.isdigit() else 0) + 1
        request = dg.RunRequest(run_key=f"{feed.asset_name}:stream:{generation}", tags={STREAM_TAG: feed.asset_name})
        return dg.SensorResult(run_requests=[request], cursor=str(generation))

    return _sensor


def streaming_run(instance: dg.DagsterInstance, feed: KafkaFeed) -> str | None:
    """The id of the streaming run consuming ``feed``, if one is in flight."""
    running = instance.get_runs(dg.RunsFilter(job_name=stream_job_name(feed), statuses=IN_FLIGHT), limit=1)
    return running[0].run_id if running else None
