"""``reconciled_with_kafka``: a replicated table checked against its topic (``lib/cdc/reconcile``).

A check of its own, not one of the asset's ``check_specs`` and kept out of the table's job: it
reads up to ``cdc.reconcile_scan_events`` records per partition, too much for every micro-batch
the sensor plans. Run it from the UI (the check's Execute) or a schedule. ERROR when a key
disagrees, never blocking: the rows are already there, the check tells an operator to look (and
replay with the backfill job)."""

from typing import Any

import dagster as dg

from pipeline_defs.defs.cdc.assets import asset_name, group_id
from pipeline_defs.defs.cdc.settings import CdcSettings
from pipeline_defs.lib.cdc.model import TableSpec
from pipeline_defs.lib.cdc.reconcile import ReconcileResult, reconcile

CHECK_NAME = "reconciled_with_kafka"


def reconciliation_key(spec: TableSpec) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(dg.AssetKey(asset_name(spec)), CHECK_NAME)


def check_metadata(result: ReconcileResult) -> dict[str, Any]:
    """Counts the UI plots run after run, and the mismatches as keys, columns and writetimes only."""
    samples = [
        f"{m.reason}: key {m.key} columns [{', '.join(m.columns)}] event_writetime {m.event_writetime} "
        f"row_writetime {m.row_writetime}"
        for m in result.samples
    ]
    return {
        "checked": result.checked,
        "matched": result.matched,
        "mismatched": result.mismatched,
        "inconclusive": result.inconclusive_total,
        "scanned": result.scanned,
        "keys_in_tail": result.keys,
        "inconclusive_reasons": ", ".join(f"{r} ({n})" for r, n in sorted(result.inconclusive.items())) or "none",
        "mismatch_samples": dg.MetadataValue.text("\n".join(samples) or "none"),
    }


def build_reconciliation_check(spec: TableSpec) -> dg.AssetChecksDefinition:
    key = reconciliation_key(spec)

    @dg.asset_check(
        asset=key.asset_key,
        name=CHECK_NAME,
        blocking=False,
        required_resource_keys={"kafka", "cdc", "cdc_postgres", "ingest"},
        description=(
            f"The newest applied event of a sample of keys, re-read from the end of {spec.topic}, matches the row "
            "in PostgreSQL (ERROR on a mismatch; what the tail cannot settle is counted as inconclusive)"
        ),
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        resources: Any = context.resources
        settings: CdcSettings = resources.cdc.settings
        with resources.cdc_postgres.connect(autocommit=True) as conn:
            result = reconcile(
                resources.kafka,
                conn,
                spec,
                schema=settings.pg_schema,
                consumer_group=group_id(resources, spec),
                soft_delete=settings.delete_mode == "soft",
                scan_events=settings.reconcile_scan_events,
                sample_keys=settings.reconcile_sample_keys,
            )
        return dg.AssetCheckResult(
            passed=result.mismatched == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata=check_metadata(result),
        )

    return _check
