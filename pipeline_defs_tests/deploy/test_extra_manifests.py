"""deploy/helm/extra/: the ops service and the Alertmanager relay, which Dagster's chart does not
deploy. Checked without a cluster: the commands are the entry points' and their parsers take the
arguments, the probes and the scrape annotation name paths the servers answer, and the pods run
the code server's image as its locked, non-root user, with its secrets."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]  # stubs may or may not be installed
from prometheus_client import CollectorRegistry

from pipeline_defs.lib.health.alertmanager_relay import RelayServer
from pipeline_defs.lib.health.alerts import AlertWebhookResource
from pipeline_defs.ops.health import HealthChecker
from pipeline_defs.ops.server import ops_app

ROOT = Path(__file__).resolve().parents[2]
VALUES: dict[str, Any] = yaml.safe_load((ROOT / "deploy/helm/values.yaml").read_text())
CODE_SERVER: dict[str, Any] = VALUES["dagster-user-deployments"]["deployments"][0]
MANIFESTS = [doc for path in sorted((ROOT / "deploy/helm/extra").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())]
DEPLOYMENTS = {doc["metadata"]["name"]: doc for doc in MANIFESTS if doc["kind"] == "Deployment"}
SERVICES = {doc["metadata"]["name"]: doc for doc in MANIFESTS if doc["kind"] == "Service"}
OPS, RELAY = "claims-pipeline-ops", "claims-pipeline-alertmanager-relay"
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


def container(name: str) -> dict[str, Any]:
    (only,) = DEPLOYMENTS[name]["spec"]["template"]["spec"]["containers"]
    return only


def module_and_args(name: str) -> tuple[str, list[str]]:
    python, dash_m, module, *args = container(name)["command"]
    assert (python, dash_m) == ("python", "-m")
    return module, args


def parsed_args(module: str, args: list[str]) -> argparse.Namespace:
    """What ``module``'s ``main`` parses ``args`` into; it stops there (nothing is served)."""

    class Parsed(Exception):
        def __init__(self, namespace: argparse.Namespace) -> None:
            self.namespace = namespace

    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(parser: argparse.ArgumentParser, *a: Any, **k: Any) -> Any:
        raise Parsed(original(parser, *a, **k))

    spec = importlib.util.find_spec(module)
    assert spec is not None, module
    is_package = spec.submodule_search_locations is not None  # `python -m` runs its __main__
    main = importlib.import_module(f"{module}.__main__" if is_package else module).main
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        with pytest.raises(Parsed) as stopped:
            main(args)
    return stopped.value.namespace


def test_the_chart_deploys_neither_so_both_are_here() -> None:
    assert set(DEPLOYMENTS) == set(SERVICES) == {OPS, RELAY}
    assert "extraManifests" not in VALUES  # the official chart has no such value: it would be ignored


@pytest.mark.parametrize("name", [OPS, RELAY])
def test_each_runs_an_entry_point_that_takes_its_arguments(name: str) -> None:
    module, args = module_and_args(name)
    namespace = parsed_args(module, args)
    assert namespace.host == "0.0.0.0"  # reachable from the kubelet's probes and from Prometheus
    (port,) = container(name)["ports"]
    assert namespace.port == port["containerPort"]
    (service_port,) = SERVICES[name]["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]
    assert SERVICES[name]["spec"]["selector"].items() <= DEPLOYMENTS[name]["spec"]["template"]["metadata"]["labels"].items()


def probe_paths(name: str) -> set[str]:
    spec = container(name)
    assert all(spec[probe]["httpGet"]["port"] == spec["ports"][0]["name"] for probe in PROBES if probe in spec)
    return {spec[probe]["httpGet"]["path"] for probe in PROBES if probe in spec}


def status_of(app: Any, path: str) -> str:
    statuses: list[str] = []
    b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, lambda status, headers, *_: statuses.append(status)))
    return statuses[0]


def test_the_ops_probes_and_scrape_path_are_served() -> None:
    annotations = DEPLOYMENTS[OPS]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == container(OPS)["ports"][0]["containerPort"]
    paths = probe_paths(OPS)
    assert {"/health/live", "/health/ready"} <= paths
    checker = HealthChecker({})
    app = ops_app(CollectorRegistry(), checker)
    try:
        for path in [*paths, annotations["prometheus.io/path"]]:
            assert status_of(app, path) == "200 OK", path
    finally:
        checker.close()


@contextlib.contextmanager
def relay() -> Iterator[str]:
    server = RelayServer(("127.0.0.1", 0), AlertWebhookResource(url=None))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_relay_probes_are_served() -> None:
    with relay() as url:
        for path in probe_paths(RELAY):
            with urllib.request.urlopen(url + path, timeout=10) as answer:
                assert answer.status == 200, path


@pytest.mark.parametrize("name", [OPS, RELAY])
def test_each_runs_the_code_servers_image_locked_down(name: str) -> None:
    image = CODE_SERVER["image"]
    assert container(name)["image"] == f"{image['repository']}:{image['tag']}"
    pod = DEPLOYMENTS[name]["spec"]["template"]["spec"]
    expected_pod = {k: v for k, v in CODE_SERVER["podSecurityContext"].items() if k != "fsGroup"}
    assert pod["securityContext"].items() >= expected_pod.items()
    assert container(name)["securityContext"] == CODE_SERVER["securityContext"]


def test_the_ops_service_reads_what_the_code_server_reads() -> None:
    spec = container(OPS)
    env = {e["name"]: e for e in spec["env"]}
    code_env = {e["name"]: e for e in CODE_SERVER["env"]}
    for name in ("PIPELINE_CONFIG_FILE", "DAGSTER_HOME", "PIPELINE_KAFKA_PASSWORD"):
        assert env[name] == code_env[name], name
    # The chart gives the code server the instance's password; here it is spelled out.
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": VALUES["global"]["postgresqlSecretName"],
        "key": "postgresql-password",
    }
    pod = DEPLOYMENTS[OPS]["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == VALUES["serviceAccount"]["name"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in spec["volumeMounts"]}
    assert mounts[env["DAGSTER_HOME"]["value"] + "/dagster.yaml"]["configMap"]["name"] == f"{VALUES['fullnameOverride']}-instance"
    # A read-only root: the instance directory and /tmp are the writable places.
    assert "emptyDir" in mounts[env["DAGSTER_HOME"]["value"]] and "emptyDir" in mounts["/tmp"]


def test_the_relay_gets_the_teams_webhook_from_the_secret_the_code_server_uses() -> None:
    module, args = module_and_args(RELAY)
    variable = parsed_args(module, args).webhook_url_env
    (env,) = container(RELAY)["env"]
    code_env = {e["name"]: e for e in CODE_SERVER["env"]}
    assert env == code_env[variable]
