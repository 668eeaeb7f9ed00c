"""results.json -> results.md: every figure next to its target."""

from __future__ import annotations

from pathlib import Path


def _table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return lines + [""]


def write_markdown(results: dict, path: Path) -> None:
    lines = ["# Benchmark results", ""]
    machine = results.get("machine", {})
    if machine:
        lines += [f"Measured {machine['measured_at']} on {machine['cores']} cores, {machine['memory_gib']} GiB, Python {machine['python']}.", ""]
    if "download_concurrency" in results:
        lines += ["## Attachment downloads (local host -> pipeline downloader -> Azurite)", ""]
        lines += _table(results["download_concurrency"])
    if "streaming_memory" in results:
        lines += ["## Peak memory streaming one attachment to Azurite (fresh process per size)", ""]
        lines += _table(results["streaming_memory"])
    path.write_text("\n".join(lines))
