"""deploy/helm/values.yaml against what the code and the local instance use: the same run queue
and pools as deploy/dagster/dagster.yaml, every secret the config names bound from a Kubernetes
secret, the config file and the instance mounted where the code looks, resources above what was
measured, the pods locked down with keys the chart has. Helm is not installed here: this reads
the values, it does not render the chart."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]  # stubs may or may not be installed

from pipeline_defs.domains import PipelineSettings
from pipeline_defs.lib.kafka.ranges import SLOT_TAG
from pipeline_defs.lib.settings import IngestSettings

ROOT = Path(__file__).resolve().parents[2]
VALUES: dict[str, Any] = yaml.safe_load((ROOT / "deploy/helm/values.yaml").read_text())
INSTANCE: dict[str, Any] = yaml.safe_load((ROOT / "deploy/dagster/dagster.yaml").read_text())
DEPLOYMENT: dict[str, Any] = VALUES["dagster-user-deployments"]["deployments"][0]
ENV: dict[str, dict[str, Any]] = {e["name"]: e for e in DEPLOYMENT["env"]}


def instance_from_values(values: dict[str, Any]) -> dict[str, Any]:
    """The parts of dagster.yaml the chart writes from these values (its configmap-instance
    template and concurrency helper, key for key)."""
    daemon, concurrency = values["dagsterDaemon"], values["concurrency"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    monitoring, runs, pools = daemon["runMonitoring"], concurrency["runs"], concurrency["pools"]
    return {
        "concurrency": {
            "runs": {"max_concurrent_runs": runs["maxConcurrentRuns"], "tag_concurrency_limits": runs["tagConcurrencyLimits"]},
            "pools": {
                "default_limit": pools["defaultLimit"],
                "granularity": pools["granularity"],
                "op_granularity_run_buffer": pools["opGranularityRunBuffer"],
            },
        },
        "run_queue": {
            "dequeue_interval_seconds": queued["dequeueIntervalSeconds"],
            "dequeue_use_threads": queued["dequeueUseThreads"],
            "dequeue_num_workers": queued["dequeueNumWorkers"],
        },
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        },
        "run_retries": {"enabled": daemon["runRetries"]["enabled"], "max_retries": daemon["runRetries"]["maxRetries"]},
        "sensors": {"use_threads": daemon["sensors"]["useThreads"], "num_workers": daemon["sensors"]["numWorkers"]},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }


def test_the_run_queue_pools_monitoring_and_retries_are_the_local_instances():
    local = {key: INSTANCE[key] for key in ("run_queue", "run_monitoring", "run_retries", "sensors", "telemetry")}
    local["concurrency"] = {
        "runs": {"tag_concurrency_limits": [], **INSTANCE["concurrency"]["runs"]},
        "pools": INSTANCE["concurrency"]["pools"],
    }
    assert instance_from_values(VALUES) == local


def test_the_sensors_plan_as_many_writers_per_table_as_the_pools_allow():
    """More would queue behind the pool; fewer would leave a slot to runs sharing partitions."""
    assert IngestSettings().writers_per_table == INSTANCE["concurrency"]["pools"]["default_limit"]
    (slots,) = INSTANCE["concurrency"]["runs"]["tag_concurrency_limits"]  # one run per writer slot at a time
    assert slots == {"key": SLOT_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}


def test_runs_are_queued_and_launched_as_kubernetes_jobs():
    assert VALUES["concurrency"]["enabled"] is True
    coordinator = VALUES["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] is True and coordinator["type"] == "QueuedRunCoordinator"
    # The chart refuses a limit set both under concurrency and under the coordinator.
    assert not {"maxConcurrentRuns", "tagConcurrencyLimits"} & set(coordinator["config"]["queuedRunCoordinator"])
    assert VALUES["runLauncher"]["type"] == "K8sRunLauncher"


def test_the_code_server_serves_the_module_the_image_serves():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert DEPLOYMENT["codeServerArgs"] == ["-m", pyproject["tool"]["dagster"]["module_name"]]
    assert f"EXPOSE {DEPLOYMENT['port']}" in (ROOT / "Dockerfile").read_text()
    assert DEPLOYMENT["includeConfigInLaunchedRuns"]["enabled"] is True  # run pods get the same env
    assert DEPLOYMENT["image"]["tag"] != "latest"


def mounted(path: str) -> dict[str, Any]:
    """The volume whose mount holds ``path`` (of nested mounts, the deepest)."""
    holding = [m for m in DEPLOYMENT["volumeMounts"] if path == m["mountPath"] or path.startswith(m["mountPath"] + "/")]
    mount = max(holding, key=lambda m: len(m["mountPath"]))
    return next(v for v in DEPLOYMENT["volumes"] if v["name"] == mount["name"])


def test_the_config_file_comes_from_a_config_map():
    assert "configMap" in mounted(ENV["PIPELINE_CONFIG_FILE"]["value"])


def test_the_code_server_reads_the_same_instance_as_everything_else():
    """The first partition day lives in the instance: the code server needs it at DAGSTER_HOME."""
    volume = mounted(ENV["DAGSTER_HOME"]["value"] + "/dagster.yaml")
    assert volume["configMap"]["name"] == f"{VALUES['fullnameOverride']}-instance"
    assert "PIPELINE_PARTITIONS_START" not in ENV  # default: the day the deployment first ran


def secret_env_names(value: Any) -> set[str]:
    """Every ``*_env`` setting's value: the variables the code binds with ``dg.EnvVar``."""
    if isinstance(value, dict):
        found = {v for k, v in value.items() if k.endswith("_env") and isinstance(v, str)}
        return found.union(*(secret_env_names(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(secret_env_names(v) for v in value))
    return set()


def test_every_secret_the_production_config_names_comes_from_a_kubernetes_secret(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIPELINE_CONFIG_FILE", str(ROOT / "deploy/config.azure.example.yaml"))
    names = secret_env_names(PipelineSettings().model_dump())
    assert {"PIPELINE_KAFKA_PASSWORD", "CLAIMX_API_TOKEN", "TEAMS_WEBHOOK_URL"} <= names
    for name in names:
        assert name in ENV, f"{name} is not provided to the code server and run pods"
        assert "value" not in ENV[name] and ENV[name]["valueFrom"]["secretKeyRef"]["name"], name


def test_azure_access_goes_through_workload_identity():
    assert VALUES["serviceAccount"]["annotations"]["azure.workload.identity/client-id"]
    assert VALUES["global"]["serviceAccountName"] == VALUES["serviceAccount"]["name"]
    assert DEPLOYMENT["labels"]["azure.workload.identity/use"] == "true"
    assert VALUES["runLauncher"]["config"]["k8sRunLauncher"]["labels"]["azure.workload.identity/use"] == "true"
    assert VALUES["generatePostgresqlPasswordSecret"] is False and VALUES["global"]["postgresqlSecretName"]


def mib(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return float(number) * (1024 if unit == "Gi" else 1)


# bench/results/results.md (as committed): an xact_attachments run streaming a 2 GiB file peaks at
# 325 MiB (2026-11-23), an Eventhouse poll run of 300,000 events from a fresh process at 401 MiB
# (2026-12-05). The file is regenerated by the benchmarks, so the figures are copied here.
MEASURED_PEAK_MIB = max(325, 401)


def test_pods_request_more_memory_than_a_run_was_measured_to_use():
    resources = DEPLOYMENT["resources"]
    assert mib(resources["requests"]["memory"]) >= MEASURED_PEAK_MIB
    assert mib(resources["limits"]["memory"]) >= 2 * MEASURED_PEAK_MIB


DOCKERFILE_UID = int(re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE).group(1))  # type: ignore[union-attr]
RUN_K8S_CONFIG: dict[str, Any] = VALUES["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]


@pytest.mark.parametrize(
    ("pod", "container"),
    [
        (DEPLOYMENT["podSecurityContext"], DEPLOYMENT["securityContext"]),
        (RUN_K8S_CONFIG["podSpecConfig"]["securityContext"], RUN_K8S_CONFIG["containerConfig"]["securityContext"]),
    ],
    ids=["code server", "run pods"],
)
def test_user_code_runs_as_the_images_user_in_a_locked_container(pod: dict[str, Any], container: dict[str, Any]):
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == pod["runAsGroup"] == DOCKERFILE_UID
    assert container["allowPrivilegeEscalation"] is False and container["readOnlyRootFilesystem"] is True
    assert container["capabilities"] == {"drop": ["ALL"]}


def test_with_a_read_only_root_dagster_home_and_tmp_are_writable():
    from pipeline_defs.lib.settings import DownloadSettings

    assert "emptyDir" in mounted(ENV["DAGSTER_HOME"]["value"]) and "emptyDir" in mounted(ENV["DAGSTER_HOME"]["value"] + "/x")
    tmp = mounted("/tmp/attachments-x")["emptyDir"]
    assert mib(tmp["sizeLimit"]) * 1024**2 > DownloadSettings().temp_disk_bytes  # a run's downloads fit


# The keys of the chart's values schema (helm/dagster/schema/schema/charts/.../user_deployments.py
# and .../subschema/run_launcher.py in dagster-io/dagster): a misspelt key is silently ignored.
USER_DEPLOYMENT_KEYS = {
    "name", "image", "port", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns", "env",
    "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
    "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe", "labels", "volumeMounts",
    "volumes", "schedulerName", "initContainers", "sidecarContainers", "deploymentStrategy", "serviceAccount",
}  # fmt: skip
K8S_RUN_LAUNCHER_KEYS = {
    "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile", "envConfigMaps", "envSecrets",
    "envVars", "volumeMounts", "volumes", "labels", "failPodOnRunFailure", "resources", "schedulerName",
    "securityContext", "runK8sConfig",
}  # fmt: skip
RUN_K8S_CONFIG_KEYS = {"containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig", "jobMetadata"}


def test_the_user_code_keys_are_the_charts():
    assert set(DEPLOYMENT) <= USER_DEPLOYMENT_KEYS, set(DEPLOYMENT) - USER_DEPLOYMENT_KEYS
    launcher = VALUES["runLauncher"]["config"]["k8sRunLauncher"]
    assert set(launcher) <= K8S_RUN_LAUNCHER_KEYS, set(launcher) - K8S_RUN_LAUNCHER_KEYS
    assert set(RUN_K8S_CONFIG) <= RUN_K8S_CONFIG_KEYS, set(RUN_K8S_CONFIG) - RUN_K8S_CONFIG_KEYS
