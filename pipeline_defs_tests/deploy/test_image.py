"""The user-code image, checked without Docker: what the Dockerfile copies exists and passes
.dockerignore, the lock resolves without dev extras, the installed code is root's, and the same
install (from the local uv cache) has the entry points the image, the Helm chart and the extra
manifests run, and loads the definitions."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]  # stubs may or may not be installed

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
UV = Path(sys.executable).parent / "uv"
DEV_ONLY = ("pytest", "ruff", "mypy", "hypothesis", "matplotlib", "pyinstrument")
# What deploy/helm/extra/ runs from this image, asked for its --help.
EXTRA_COMMANDS = [
    [*container["command"][:3], "--help"]
    for path in sorted((ROOT / "deploy/helm/extra").glob("*.yaml"))
    for doc in yaml.safe_load_all(path.read_text())
    if doc["kind"] == "Deployment"
    for container in doc["spec"]["template"]["spec"]["containers"]
]


def instructions(name: str) -> list[str]:
    joined = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.strip().upper().startswith(name + " ")]


def allowed_paths() -> list[str]:
    """The .dockerignore is an allow-list: ``*``, then ``!path`` for what the build may see."""
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "the .dockerignore starts by excluding everything"
    return [rule[1:].rstrip("/") for rule in rules if rule.startswith("!")]


def test_the_base_image_is_the_python_the_project_requires():
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILE
    assert PYPROJECT["project"]["requires-python"] == ">=3.11,<3.12"


def test_what_the_build_copies_exists_and_is_not_ignored():
    allowed = allowed_paths()
    for copy in instructions("COPY"):
        if copy.startswith("--from="):
            continue
        *sources, _ = copy.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert any(source == a or source.startswith(a + "/") for a in allowed), f"{source} is in .dockerignore"


def test_dependencies_come_from_the_lock_without_dev_extras():
    runs = " ".join(instructions("RUN"))
    assert runs.count("uv sync --frozen --no-dev") == 2
    assert "--extra" not in runs and "--all-extras" not in runs
    # The uv the image installs is the one the dev extra pins (the one that wrote uv.lock).
    pinned = next(d for d in PYPROJECT["project"]["optional-dependencies"]["dev"] if d.startswith("uv=="))
    assert f"pip install --no-cache-dir {pinned}" in DOCKERFILE


def test_the_locked_runtime_set_has_dagster_and_no_test_tools():
    exported = subprocess.run(
        [str(UV), "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = {re.split(r"[=<>; \[]", line, maxsplit=1)[0].lower() for line in exported.splitlines() if line[:1].isalnum()}
    assert {"dagster", "dagster-postgres", "confluent-kafka", "deltalake"} <= names
    assert not names & set(DEV_ONLY), names & set(DEV_ONLY)


def test_it_runs_as_a_fixed_non_root_user_and_serves_the_code_location():
    assert instructions("USER") == ["10001:10001"]
    assert instructions("ENTRYPOINT") == []  # the chart passes the whole command as args
    module = PYPROJECT["tool"]["dagster"]["module_name"]
    port = instructions("EXPOSE")[0]
    cmd = instructions("CMD")[-1]
    assert f'"-p", "{port}", "-m", "{module}"' in cmd and cmd.startswith('["dagster", "code-server", "start"')
    assert f'"grpc-health-check", "-p", "{port}"' in instructions("HEALTHCHECK")[0]


def test_the_runtime_user_cannot_change_the_installed_code():
    """The venv is copied as the build stage (root) left it: no --chown, no later chown or chmod."""
    (venv_copy,) = [c for c in instructions("COPY") if c.split()[-1] == "/opt/venv"]
    assert venv_copy == "--from=build /opt/venv /opt/venv"
    assert not any("/opt/venv" in run for run in instructions("RUN")), "nothing changes the venv after the copy"


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's venv, built as its Dockerfile does, from the build context .dockerignore lets
    through, offline from uv's cache (skipped when the cache lacks a locked package)."""
    context = tmp_path_factory.mktemp("context")
    for path in allowed_paths():
        source = ROOT / path
        if source.is_dir():
            shutil.copytree(source, context / path, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, context / path)
    venv = tmp_path_factory.mktemp("image") / "venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never"}
    sync = [str(UV), "sync", "--frozen", "--no-dev", "--no-editable", "--offline", "--python", sys.executable]
    result = subprocess.run(sync, cwd=context, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.skip(f"the locked packages are not all in uv's cache here: {result.stderr[-300:]}")
    return venv


@pytest.mark.parametrize(
    "command",
    [
        ["dagster", "code-server", "start", "--help"],
        ["dagster", "api", "grpc-health-check", "--help"],
        ["dagster", "api", "execute_run", "--help"],  # what K8sRunLauncher runs in a run pod
        ["pipeline-dlq", "--help"],
        ["pipeline-topics", "--help"],
        *EXTRA_COMMANDS,
    ],
)
def test_the_images_entry_points_exist(image_venv: Path, command: list[str]):
    subprocess.run([str(image_venv / "bin" / command[0]), *command[1:]], check=True, capture_output=True, timeout=120)


def test_the_installed_package_loads_the_definitions_without_its_sources(image_venv: Path, tmp_path: Path):
    code = (
        "import importlib.util, dagster as dg, pipeline_defs\n"
        "from pipeline_defs.definitions import defs\n"
        "assert 'site-packages' in pipeline_defs.__file__, pipeline_defs.__file__\n"
        "dg.Definitions.validate_loadable(defs())\n"
        f"assert not any(importlib.util.find_spec(m) for m in {DEV_ONLY!r})\n"
    )
    env = {"PATH": f"{image_venv / 'bin'}:/usr/bin:/bin", "PIPELINE_CONFIG_FILE": str(tmp_path / "none.yaml")}
    result = subprocess.run(
        [str(image_venv / "bin" / "python"), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
