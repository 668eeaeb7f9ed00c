"""The runbooks (docs/runbooks/): every command shown in a ``bash`` block exists (its executable,
and its subcommands, answer ``--help``; for this repository's CLIs and Dagster's, every option
shown is one they list), every metric named is in the contract, every alert sends you to a
runbook that names it, and the index links them all. ``helm`` and ``kafka-consumer-groups.sh``
are not installed here: their commands are skipped, and say so."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]  # stubs may or may not be installed

from pipeline_defs.ops.names import CONTRACT, KAFKA_END_OFFSET, SOURCE_UP

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "runbooks"
NAMED = (
    "index",
    "consumer-lag",
    "circuit-breaker",
    "poison-range",
    "storage-down",
    "deployment",
    "scaling",
    "credential-rotation",
)
NOT_INSTALLED_HERE = {"helm", "kafka-consumer-groups.sh"}
SHELL_BUILTINS = {"source", "export", "cd", "set", "unset"}
# Their --help lists every option, so the options a runbook shows can be checked against it.
OWN_CLIS = {"dagster", "pipeline-dlq", "pipeline-topics", "python"}
SUBCOMMAND = re.compile(r"[a-z][a-z0-9_-]*")
ENV = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}"}


def commands(markdown: str) -> list[str]:
    """The commands of the ``bash`` blocks, continuations joined, split at pipes and ``&&``."""
    found = []
    for block in re.findall(r"^\s*```bash\n(.*?)^\s*```", markdown, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                found += [part.strip() for part in re.split(r"\s(?:\|\||&&|\||;)\s", line) if part.strip()]
    return found


ALL = sorted({(path.name, command) for path in RUNBOOKS.glob("*.md") for command in commands(path.read_text())})


def invocation(command: str) -> tuple[list[str], list[str]]:
    """The executable with its subcommands, and the options shown (up to a ``--``)."""
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        words = words[1:]
    program, rest = [words[0]], words[1:]
    if Path(words[0]).name in {"kubectl", "helm"}:  # their namespace flag comes before the subcommand
        rest = [w for i, w in enumerate(rest) if w not in {"-n", "--namespace"} and (i == 0 or rest[i - 1] != "-n")]
    if words[0] in {"python", ".venv/bin/python"} and rest[:1] == ["-m"]:
        program, rest = [words[0], "-m", rest[1]], rest[2:]
    while rest and SUBCOMMAND.fullmatch(rest[0]) and len(program) < 4:
        program.append(rest.pop(0))
    options = []
    for word in rest:
        if word == "--":
            break
        if re.fullmatch(r"--?[a-zA-Z][\w-]*(=.*)?", word):
            options.append(word.split("=", 1)[0])
    return program, options


@cache
def help_text(program: tuple[str, ...]) -> str:
    """``program --help``, dropping trailing positional words until one answers."""
    words = list(program)
    while True:
        result = subprocess.run([*words, "--help"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
        if result.returncode == 0 or len(words) == 1 or (words[0].endswith("python") and len(words) == 3):
            assert result.returncode == 0, f"{' '.join(words)} --help: {result.stderr[-500:]}"
            return result.stdout + result.stderr
        words.pop()


@pytest.mark.parametrize(("runbook", "command"), ALL, ids=[f"{r}:{c[:60]}" for r, c in ALL])
def test_the_command_exists(runbook: str, command: str):
    check(command)
    words = shlex.split(command)
    if "--" in words:  # what `kubectl exec ... --` runs in the pod: the image has what the venv has
        check(shlex.join(words[words.index("--") + 1 :]))


def check(command: str) -> None:
    program, options = invocation(command)
    name = Path(program[0]).name
    if name in SHELL_BUILTINS:
        return
    if name in NOT_INSTALLED_HERE:
        pytest.skip(f"{name} is not installed on this machine; {command!r} is not checked")
    if name == "bash":  # a repository script: it exists and its usage names the subcommand
        _, path, *args = shlex.split(command)
        assert (ROOT / path).is_file(), path
        assert all(f"{path} {word}" in (ROOT / path).read_text() for word in args[:1]), command
        return
    if "/" in program[0]:
        assert (ROOT / program[0]).exists(), f"{program[0]} does not exist"
    else:
        assert shutil.which(program[0], path=ENV["PATH"]), f"{program[0]} is not on PATH"
    text = help_text(tuple(program))
    if name in OWN_CLIS or Path(program[0]).name in OWN_CLIS:
        missing = [option for option in options if option not in text]
        assert not missing, f"{command!r}: {missing} not in `{' '.join(program)} --help`"


def test_the_index_links_every_runbook():
    assert {p.stem for p in RUNBOOKS.glob("*.md")} >= {*NAMED, "dlq"}
    index = (RUNBOOKS / "index.md").read_text()
    for name in (*NAMED[1:], "dlq"):
        assert f"]({name}.md)" in index, name


def test_each_runbook_says_what_sends_you_there():
    for name in NAMED[1:]:
        text = (RUNBOOKS / f"{name}.md").read_text()
        assert "## What sends you here" in text, name
        assert re.search(r"`pipeline_[a-z_]+", text), f"{name} names no metric"


def test_every_metric_named_is_in_the_contract():
    known = {*CONTRACT, SOURCE_UP, KAFKA_END_OFFSET}
    for path in RUNBOOKS.glob("*.md"):
        named = set(re.findall(r"\b(pipeline_[a-z_]+?)(?:\{|`|'|\b)", path.read_text()))
        metrics = {n for n in named if n.endswith(("_total", "_seconds", "_lag", "_depth", "_up", "_queued", "_open", "_offset"))}
        assert metrics <= known, f"{path.name}: {metrics - known}"


ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"


@pytest.mark.skipif(not ALERTS.exists(), reason="no alert rules in this tree")
def test_every_alert_sends_you_to_a_runbook_that_names_it():
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    index = (RUNBOOKS / "index.md").read_text()
    for rule in rules:
        target = ROOT / rule["annotations"]["runbook_url"]
        assert target.is_file(), f"{rule['alert']}: {target} is missing"
        # dlq.md predates the alerts: the index names them on its row.
        named_in = index if target.name == "dlq.md" else target.read_text()
        assert rule["alert"] in named_in, f"{target.name} does not name {rule['alert']}"
