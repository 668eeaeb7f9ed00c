"""DLQ operations without the UI: the same library calls as the Launchpad jobs.

    pipeline-dlq list    [--dlq NAME] [--status waiting] [--category C]
    pipeline-dlq inspect ENTRY_ID [--dlq NAME]
    pipeline-dlq replay  --dlq NAME [filters] --reason R [--apply] [--corrected-file F]
    pipeline-dlq resolve --dlq NAME [filters] --reason R [--dry-run]
    pipeline-dlq purge   --dlq NAME [filters] --reason R --confirm

Filters: --ids ID..., --category C, --after ISO, --before ISO, --max N. Replay is a dry run
unless --apply; --corrected-file replays one entry (--ids) with a corrected value. Settings come from the environment and config.yaml, as for the code location.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import polars as pl

from pipeline_defs.domains import DLQ_VIEWS, PipelineSettings, build_resources
from pipeline_defs.lib.dlq.operations import (
    MAX_SELECTION,
    DlqFilter,
    Operation,
    OperationResult,
    RefusedOperation,
    entries,
    parse_moment,
    purge,
    replay,
    resolve,
)
from pipeline_defs.lib.dlq.views import STATUSES, WAITING

LIST_COLUMNS = ["entry_id", "item_id", "error_category", "retry_count", "first_seen", "last_seen", "status", "reason"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline-dlq", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("list", "inspect", "replay", "resolve", "purge"):
        command = commands.add_parser(name)
        command.add_argument("--dlq", choices=sorted(DLQ_VIEWS), default=None if name == "list" else next(iter(DLQ_VIEWS)))
        if name == "inspect":
            command.add_argument("entry_id")
            continue
        command.add_argument("--ids", nargs="*", default=[])
        command.add_argument("--category")
        command.add_argument("--after", type=_moment, help="ISO time with zone, e.g. 2026-12-01T08:00:00Z")
        command.add_argument("--before", type=_moment, help="ISO time with zone")
        command.add_argument("--max", type=_count, default=100, help=f"1 to {MAX_SELECTION}")
        command.add_argument("--status", nargs="*", default=[WAITING], choices=list(STATUSES))
        if name != "list":
            command.add_argument("--reason", required=name != "replay", default="replay")
        if name == "replay":
            command.add_argument("--apply", action="store_true", help="really replay (default: dry run)")
            command.add_argument(
                "--corrected-file", type=argparse.FileType("rb"), help="replay the one selected entry with this file's bytes"
            )
        if name in ("resolve", "purge"):
            command.add_argument("--dry-run", action="store_true")
        if name == "purge":
            command.add_argument("--confirm", action="store_true", help="required: purge removes entries")
    return parser


def _moment(text: str) -> datetime:
    try:
        return parse_moment(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_SELECTION:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_SELECTION}")
    return value


def _filters(args: argparse.Namespace) -> DlqFilter:
    return DlqFilter(
        ids=tuple(args.ids),
        error_category=args.category,
        seen_after=args.after,
        seen_before=args.before,
        statuses=tuple(args.status),
        max_count=args.max,
    )


def _print_entries(frame: pl.DataFrame) -> None:
    now = datetime.now(UTC)
    with pl.Config(tbl_rows=200, fmt_str_lengths=60, tbl_width_chars=200):
        print(
            frame.select(LIST_COLUMNS).with_columns(
                age_hours=((pl.lit(now) - pl.col("first_seen")).dt.total_seconds() / 3600).round(1)
            )
        )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    resources = build_resources(PipelineSettings())
    lake = resources["lake"]
    if args.command == "list":
        for name in [args.dlq] if args.dlq else sorted(DLQ_VIEWS):
            print(f"== {name}")
            _print_entries(entries(lake, DLQ_VIEWS[name], _filters(args)))
        return 0
    spec = DLQ_VIEWS[args.dlq]
    if args.command == "inspect":
        found = entries(lake, spec, DlqFilter(ids=(args.entry_id,), statuses=STATUSES, max_count=10))
        for row in found.iter_rows(named=True):
            payload = row.pop("payload")
            row["payload"] = payload.decode("utf-8", "replace") if payload else None
            print(json.dumps(row, default=str, indent=2))
        return 0 if found.height else 1
    operation = Operation(
        name=args.command,
        dlq=args.dlq,
        filters=_filters(args),
        reason=args.reason,
        run_id=f"cli-{uuid.uuid4()}",
        launched_by=f"cli:{getpass.getuser()}",
        dry_run=not args.apply if args.command == "replay" else args.dry_run,
        corrected_value=args.corrected_file.read() if getattr(args, "corrected_file", None) else None,
    )
    try:
        if args.command == "replay":
            clusters = {"kafka": resources["kafka"], "source_kafka": resources["source_kafka"]}
            result: OperationResult = replay(lake, clusters, resources["files"], SimpleNamespace(**resources), spec, operation)
        elif args.command == "resolve":
            result = resolve(lake, spec, operation)
        else:
            result = purge(lake, spec, operation, confirmed=args.confirm)
    except RefusedOperation as refused:
        print(f"refused: {refused}", file=sys.stderr)
        return 2
    print(f"{args.command} {args.dlq}: {len(result.entry_ids)} entries, {result.outcome}")
    for entry_id in result.entry_ids:
        print(f"  {entry_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
