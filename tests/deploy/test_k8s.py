"""The deployment files (deploy/k8s, deploy/docker), checked as far as they can be without a cluster.

* every YAML file under deploy/ parses; the Kubernetes manifests are read into the Kubernetes
  client's own models (unknown or misspelt fields fail);
* deploy/k8s/values.yaml uses only keys of Dagster's Helm chart that these files rely on, and its
  user-code deployment is consistent with the settings (rt_resources/settings.py) and the volumes;
* deploy/k8s/instance.yaml is what the chart renders from values.yaml, and Dagster accepts it: its
  instance schema, and each configured class's config schema (K8sRunLauncher, the Postgres
  storages, the run coordinator), with dagster-k8s and dagster-postgres installed;
* the segmentation steps carry the dagster-k8s/config tag that asks for one GPU, and the pod that
  dagster-k8s builds for such a step (from the chart's container context) requests it, while CPU
  steps request none.

No cluster, no network, no Docker: the Kubernetes objects are built in memory.
"""

from __future__ import annotations

import copy
import re
import typing
from pathlib import Path

import kubernetes.client  # installed with dagster-k8s (requirements.txt)
import pytest
import yaml
from dagster._config import process_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import ConcurrencyConfig, PoolGranularity, dagster_instance_config
from dagster._serdes import ConfigurableClassData, class_from_code_pointer
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_user_defined_k8s_config
from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict

from rt_assets.constants import CODE_LOCATION
from rt_resources.settings import ENV_FIELDS, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
DOCKER = DEPLOY / "docker"
RELEASE = NAMESPACE = "rtpipeline"  #: the release and namespace deploy/k8s/README.md installs into
FULLNAME = f"{RELEASE}-dagster"  #: the chart's resource name prefix for that release
SUBCHART = f"{RELEASE}-dagster-user-deployments"  #: the user-code subchart's name prefix
GPU = "nvidia.com/gpu"

#: the chart's keys that values.yaml may use, by section (from the chart's values.schema.json and
#: values.yaml, dagster 1.13; deploy/k8s/README.md records the full schema check)
CHART_TOP_LEVEL = {
    "global",
    "dagsterWebserver",
    "dagster-user-deployments",
    "postgresql",
    "generatePostgresqlPasswordSecret",
    "generateCeleryConfigSecret",
    "rabbitmq",
    "redis",
    "flower",
    "ingress",
    "imagePullSecrets",
    "computeLogManager",
    "scheduler",
    "runLauncher",
    "pythonLogs",
    "dagsterDaemon",
    "busybox",
    "migrate",
    "telemetry",
    "serviceAccount",
    "retention",
    "additionalInstanceConfig",
    "concurrency",
}
CHART_GLOBAL = {"postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName"}
CHART_USER_DEPLOYMENTS = {"enabled", "enableSubchart", "imagePullSecrets", "deployments"}
CHART_USER_DEPLOYMENT = {
    "name",
    "image",
    "dagsterApiGrpcArgs",
    "codeServerArgs",
    "includeConfigInLaunchedRuns",
    "deploymentNamespace",
    "port",
    "env",
    "envConfigMaps",
    "envSecrets",
    "annotations",
    "nodeSelector",
    "affinity",
    "tolerations",
    "podSecurityContext",
    "securityContext",
    "resources",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "labels",
    "volumeMounts",
    "volumes",
    "schedulerName",
    "initContainers",
    "sidecarContainers",
}
CHART_IMAGE = {"repository", "tag", "pullPolicy"}
CHART_POSTGRESQL = {
    "image",
    "enabled",
    "postgresqlHost",
    "postgresqlUsername",
    "postgresqlPassword",
    "postgresqlDatabase",
    "postgresqlParams",
    "postgresqlScheme",
    "service",
}
CHART_K8S_RUN_LAUNCHER = {
    "image",
    "imagePullPolicy",
    "jobNamespace",
    "loadInclusterConfig",
    "kubeconfigFile",
    "envConfigMaps",
    "envSecrets",
    "envVars",
    "volumeMounts",
    "volumes",
    "labels",
    "failPodOnRunFailure",
    "resources",
    "schedulerName",
    "securityContext",
    "runK8sConfig",
}
CHART_DAEMON = {
    "enabled",
    "image",
    "runCoordinator",
    "heartbeatTolerance",
    "env",
    "envConfigMaps",
    "envSecrets",
    "deploymentLabels",
    "labels",
    "nodeSelector",
    "affinity",
    "tolerations",
    "podSecurityContext",
    "securityContext",
    "resources",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "annotations",
    "runMonitoring",
    "runRetries",
    "sensors",
    "schedules",
    "schedulerName",
    "volumeMounts",
    "volumes",
    "initContainerResources",
}
CHART_RUN_COORDINATOR = {"enabled", "type", "config"}
CHART_RUN_MONITORING = {
    "enabled",
    "startTimeoutSeconds",
    "cancelTimeoutSeconds",
    "pollIntervalSeconds",
    "maxResumeRunAttempts",
    "freeSlotsAfterRunEndSeconds",
}
CHART_PYTHON_LOGS = {"pythonLogLevel", "managedPythonLoggers", "dagsterHandlerConfig"}
CHART_COMPUTE_LOG_TYPES = {
    "NoOpComputeLogManager": ("dagster._core.storage.noop_compute_log_manager", "NoOpComputeLogManager"),
}
#: the chart's own defaults for what values.yaml leaves unset but the instance shows
CHART_DEFAULTS = {
    "dagsterHome": "/opt/dagster/dagster_home",
    "postgresqlSecretName": "dagster-postgresql-secret",
    "queuedRunCoordinator": {"dequeue_use_threads": True, "dequeue_num_workers": 4},
    "runRetries": {"enabled": True},  # maxRetries 0 renders no max_retries
    "sensors": {"use_threads": True, "num_workers": 4},
    "schedules": {"use_threads": True, "num_workers": 4},
}


def _docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def _manifests() -> list[Path]:
    return [p for p in sorted(K8S.glob("*.yaml")) if p.name not in ("values.yaml", "instance.yaml")]


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load((K8S / "values.yaml").read_text())


@pytest.fixture(scope="module")
def instance_yaml() -> dict:
    return yaml.safe_load((K8S / "instance.yaml").read_text())


@pytest.fixture(scope="module")
def deployment(values) -> dict:
    (dep,) = values["dagster-user-deployments"]["deployments"]
    return dep


# ---------------------------------------------------------------------------------------------
# YAML and Kubernetes manifests


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_under_deploy_parses(path):
    assert _docs(path), f"{path} holds no YAML document"


def test_the_kubernetes_files_are_there():
    assert {"values.yaml", "instance.yaml", "pvc.yaml", "receiver.yaml", "models-loader.yaml", "README.md"} <= {
        p.name for p in K8S.iterdir()
    }


MODELS = {
    "PersistentVolumeClaim": kubernetes.client.V1PersistentVolumeClaim,
    "Deployment": kubernetes.client.V1Deployment,
    "Service": kubernetes.client.V1Service,
    "Pod": kubernetes.client.V1Pod,
}


@pytest.mark.parametrize("path", _manifests(), ids=lambda p: p.name)
def test_manifests_are_valid_kubernetes_objects(path):
    for doc in _docs(path):
        assert {"apiVersion", "kind", "metadata"} <= set(doc), f"{path.name}: {sorted(doc)}"
        assert doc["metadata"].get("name"), f"{path.name}: a {doc['kind']} without metadata.name"
        assert "namespace" not in doc["metadata"], "the namespace is given on the command line (kubectl -n)"
        model = MODELS[doc["kind"]]
        # the Kubernetes client's models: unknown or misspelt fields and missing required ones fail
        obj = k8s_model_from_dict(model, k8s_snake_case_dict(model, doc))
        assert obj.metadata.name == doc["metadata"]["name"]


def test_the_volumes_values_yaml_claims_exist_and_are_shared(deployment):
    claims = {d["metadata"]["name"]: d for d in _docs(K8S / "pvc.yaml") if d["kind"] == "PersistentVolumeClaim"}
    used = {v["persistentVolumeClaim"]["claimName"] for v in deployment["volumes"] if "persistentVolumeClaim" in v}
    assert used and used <= set(claims)
    for name in used:  # mounted by the code server, every run pod and every step pod at once
        assert claims[name]["spec"]["accessModes"] == ["ReadWriteMany"], name
    for doc in _docs(K8S / "receiver.yaml") + _docs(K8S / "models-loader.yaml"):
        spec = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc.get("spec", {})
        for volume in spec.get("volumes", []):
            assert volume["persistentVolumeClaim"]["claimName"] in claims


# ---------------------------------------------------------------------------------------------
# values.yaml: the chart's keys, and the user-code deployment


def _unknown(section: dict, allowed: set[str]) -> set[str]:
    return set(section) - allowed


def test_values_use_only_keys_of_the_chart(values, deployment):
    assert not _unknown(values, CHART_TOP_LEVEL)
    assert not _unknown(values["global"], CHART_GLOBAL)
    assert not _unknown(values["dagster-user-deployments"], CHART_USER_DEPLOYMENTS)
    assert not _unknown(deployment, CHART_USER_DEPLOYMENT)
    assert not _unknown(deployment["image"], CHART_IMAGE)
    assert set(deployment["includeConfigInLaunchedRuns"]) == {"enabled"}
    assert not _unknown(values["postgresql"], CHART_POSTGRESQL)
    assert set(values["postgresql"]["service"]) == {"port"}
    assert set(values["runLauncher"]) == {"type", "config"} and set(values["runLauncher"]["config"]) == {
        "k8sRunLauncher"
    }
    assert not _unknown(values["runLauncher"]["config"]["k8sRunLauncher"], CHART_K8S_RUN_LAUNCHER)
    assert not _unknown(values["dagsterDaemon"], CHART_DAEMON)
    assert not _unknown(values["dagsterDaemon"]["runCoordinator"], CHART_RUN_COORDINATOR)
    assert not _unknown(values["dagsterDaemon"]["runMonitoring"], CHART_RUN_MONITORING)
    assert not _unknown(values["pythonLogs"], CHART_PYTHON_LOGS)
    assert set(values["telemetry"]) == {"enabled"}
    assert set(values["computeLogManager"]) <= {"type", "config"}
    assert values["computeLogManager"]["type"] in CHART_COMPUTE_LOG_TYPES


def test_values_structure_the_deployment_relies_on(values, deployment):
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["runLauncher"]["config"]["k8sRunLauncher"]["loadInclusterConfig"] is True
    # external PostgreSQL, password from a Secret made by hand
    pg = values["postgresql"]
    assert pg["enabled"] is False and pg["postgresqlHost"] and pg["postgresqlUsername"] and pg["postgresqlDatabase"]
    assert isinstance(pg["service"]["port"], int)
    assert "postgresqlPassword" not in pg and values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    # one user-code deployment: the code location "rtpipeline", loaded like workspace.yaml does
    assert values["dagster-user-deployments"]["enabled"] and values["dagster-user-deployments"]["enableSubchart"]
    assert deployment["name"] == CODE_LOCATION
    (workspace,) = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"]
    module = workspace["python_module"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", module["module_name"], "-a", module["attribute"]]
    assert module["location_name"] == CODE_LOCATION
    assert isinstance(deployment["port"], int)
    image = deployment["image"]
    assert image["repository"] and isinstance(image["tag"], str) and image["tag"] != "latest"
    assert image["pullPolicy"] in ("Always", "IfNotPresent", "Never")
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True  # runs and steps get env + volumes
    assert "resources" not in deployment, "would be copied into every run and step pod"
    assert [s["name"] for s in deployment["envSecrets"]] == ["rtpipeline-secrets"]


def test_user_code_env_names_settings_and_strings(deployment):
    env = deployment["env"]
    assert isinstance(env, dict) and all(isinstance(v, str) for v in env.values()), "the chart takes strings"
    assert set(env) <= set(ENV_FIELDS), f"not a setting (rt_resources/settings.py): {set(env) - set(ENV_FIELDS)}"
    assert env["RT_STEP_EXECUTOR"] == "k8s"
    # everything but the executor choice (wired in rt_assets/executors.py) is a valid setting today
    settings = load_settings(environ={k: v for k, v in env.items() if k != "RT_STEP_EXECUTOR"})
    assert settings.data_root == env["RT_DATA_ROOT"] and settings.drop_root == env["RT_DROP_ROOT"]
    assert settings.state_dir == env["RT_STATE_DIR"] and settings.totalsegmentator.home == env["TOTALSEG_HOME_DIR"]
    assert settings.workers == int(env["RT_WORKERS"])


def test_step_executor_k8s_is_a_setting(deployment):
    choices = typing.get_args(Settings.model_fields["step_executor"].annotation)
    if "k8s" not in choices:
        pytest.skip(f"RT_STEP_EXECUTOR=k8s is not a choice of step_executor yet {choices}")
    assert load_settings(environ=deployment["env"]).step_executor == "k8s"


def _mounts(deployment) -> dict[str, dict]:
    return {m["mountPath"]: m for m in deployment["volumeMounts"]}


def _volume(deployment, name: str) -> dict:
    (volume,) = [v for v in deployment["volumes"] if v["name"] == name]
    return volume


def test_volumes_match_the_settings(deployment):
    env, mounts = deployment["env"], _mounts(deployment)
    names = [v["name"] for v in deployment["volumes"]]
    assert len(names) == len(set(names)) and {m["name"] for m in mounts.values()} == set(names)
    # data root: the shared volume, read-write
    data = mounts[env["RT_DATA_ROOT"]]
    assert not data.get("readOnly") and "persistentVolumeClaim" in _volume(deployment, data["name"])
    # drop: the shared volume, read-only (claim and mount)
    drop = mounts[env["RT_DROP_ROOT"]]
    assert drop["readOnly"] and _volume(deployment, drop["name"])["persistentVolumeClaim"]["readOnly"]
    # state (SQLite + locks): pod-local, never the network volume
    assert "emptyDir" in _volume(deployment, mounts[env["RT_STATE_DIR"]]["name"])
    # TotalSegmentator's home is writable (config.json); its weights folder read-only inside it
    home = env["TOTALSEG_HOME_DIR"]
    assert "emptyDir" in _volume(deployment, mounts[home]["name"])
    weights = mounts[f"{home}/nnunet"]
    assert weights["readOnly"] and "persistentVolumeClaim" in _volume(deployment, weights["name"])
    assert mounts[env["RT_MODELS_DIR"]]["readOnly"]


def _chart_container_context(deployment) -> dict:
    """The container context the chart gives the code server (includeConfigInLaunchedRuns): what
    every run pod, and through the run every step pod, inherits."""
    k8s = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [f"{SUBCHART}-{deployment['name']}-user-env"],  # the env map, as a ConfigMap
        "env_secrets": [s["name"] for s in deployment["envSecrets"]],
        "volume_mounts": deployment["volumeMounts"],
        "volumes": deployment["volumes"],
        "namespace": NAMESPACE,
        "service_account_name": f"{SUBCHART}-user-deployments",
    }
    return {"k8s": k8s}


def test_chart_container_context_is_accepted_by_dagster_k8s(deployment):
    # config schema of the container context, and the volumes read into Kubernetes models
    context = K8sContainerContext.create_from_config(_chart_container_context(deployment))
    for volume in context.run_k8s_config.pod_spec_config["volumes"]:
        k8s_model_from_dict(kubernetes.client.V1Volume, volume)
    for mount in context.run_k8s_config.container_config["volume_mounts"]:
        k8s_model_from_dict(kubernetes.client.V1VolumeMount, mount)


# ---------------------------------------------------------------------------------------------
# instance.yaml: what the chart renders, and what Dagster accepts


def _postgres(values) -> dict:
    pg = values["postgresql"]
    return {
        "postgres_db": {
            "username": pg["postgresqlUsername"],
            "password": {"env": "DAGSTER_PG_PASSWORD"},
            "hostname": pg["postgresqlHost"],
            "db_name": pg["postgresqlDatabase"],
            "port": pg["service"]["port"],
            "params": pg.get("postgresqlParams", {}),
        }
    }


def _camel_to_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def render_instance(values: dict) -> dict:
    """dagster.yaml as the chart's instance ConfigMap template builds it, for the keys values.yaml
    sets (and the chart's defaults for the rest)."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    launcher_config = {
        "load_incluster_config": launcher["loadInclusterConfig"],
        "job_namespace": launcher.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": FULLNAME,
        "dagster_home": values.get("global", {}).get("dagsterHome", CHART_DEFAULTS["dagsterHome"]),
        "instance_config_map": f"{FULLNAME}-instance",
        "postgres_password_secret": values["global"].get(
            "postgresqlSecretName", CHART_DEFAULTS["postgresqlSecretName"]
        ),
    }
    for key in ("resources", "labels", "volumes", "volumeMounts", "envVars", "schedulerName", "securityContext"):
        if launcher.get(key):
            launcher_config[_camel_to_snake(key)] = launcher[key]
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    queued = {
        **CHART_DEFAULTS["queuedRunCoordinator"],
        **{
            _camel_to_snake(k): v
            for k, v in coordinator.get("config", {}).get("queuedRunCoordinator", {}).items()
            if v is not None
        },
    }
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    module, klass = CHART_COMPUTE_LOG_TYPES[values["computeLogManager"]["type"]]
    logs = values["pythonLogs"]
    rendered = {
        "scheduler": {"module": "dagster._core.scheduler", "class": "DagsterDaemonScheduler"},
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": _postgres(values),
        },
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher_config},
        "run_storage": {
            "module": "dagster_postgres.run_storage",
            "class": "PostgresRunStorage",
            "config": _postgres(values),
        },
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": _postgres(values),
        },
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": queued,
        },
        "compute_logs": {"module": module, "class": klass},
        "python_logs": {
            "python_log_level": logs["pythonLogLevel"],
            "managed_python_loggers": logs["managedPythonLoggers"],
        },
        "run_monitoring": {_camel_to_snake(k): v for k, v in monitoring.items()},
        "run_retries": CHART_DEFAULTS["runRetries"],
        "sensors": CHART_DEFAULTS["sensors"],
        "schedules": CHART_DEFAULTS["schedules"],
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }
    return {**rendered, **values.get("additionalInstanceConfig", {})}


def test_instance_yaml_is_what_the_chart_renders_from_values(values, instance_yaml):
    rendered = render_instance(values)
    assert set(rendered) == set(instance_yaml)
    for key in rendered:
        assert rendered[key] == instance_yaml[key], key


def test_instance_keeps_the_repository_limits(instance_yaml):
    """The queue limits, pools, log capture and managed loggers of the repository's dagster.yaml."""
    local = yaml.safe_load((REPO / "dagster.yaml").read_text())
    for key in ("concurrency", "python_logs", "compute_logs", "telemetry"):
        assert instance_yaml[key] == local[key], key
    assert (
        instance_yaml["run_monitoring"]["enabled"] and instance_yaml["run_monitoring"]["max_resume_run_attempts"] == 0
    )


def validate_instance(config: dict, tmp_path: Path) -> dict:
    """Dagster's own checks of an instance config: the instance schema (as `dagster` reads
    $DAGSTER_HOME/dagster.yaml), then each configurable class's config schema."""
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    checked, custom_class = dagster_instance_config(str(home))
    assert custom_class is None
    for key in (
        "scheduler",
        "schedule_storage",
        "run_storage",
        "event_log_storage",
        "run_launcher",
        "run_coordinator",
        "compute_logs",
    ):
        section = checked[key]
        klass = class_from_code_pointer(section["module"], section["class"])
        result = process_config(klass.config_type(), section.get("config") or {})
        if not result.success:
            raise DagsterInvalidConfigError(f"{key}: {klass.__name__} config", result.errors, section)
    return checked


@pytest.fixture
def pg_env(monkeypatch):
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "not-a-real-password")  # StringSource {env: ...} resolves it


def test_instance_config_loads_with_dagster_k8s(instance_yaml, tmp_path, pg_env):
    checked = validate_instance(instance_yaml, tmp_path)
    assert class_from_code_pointer(checked["run_launcher"]["module"], checked["run_launcher"]["class"]).__name__ == (
        "K8sRunLauncher"
    )
    # the run queue and pools the daemon will apply: the run coordinator's config with concurrency:
    coordinator = checked["run_coordinator"]
    klass = class_from_code_pointer(coordinator["module"], coordinator["class"])
    processed = process_config(klass.config_type(), coordinator["config"]).value
    queue = klass.from_config_value(
        ConfigurableClassData(coordinator["module"], coordinator["class"], yaml.safe_dump(coordinator["config"])),
        processed,
    ).get_run_queue_config()
    concurrency = ConcurrencyConfig.from_concurrency_settings(checked["concurrency"], queue)
    assert concurrency.run_queue_config.max_concurrent_runs == 5
    limits = {limit["key"]: limit for limit in concurrency.run_queue_config.tag_concurrency_limits}
    # one inferring, one waiting with its input ready
    assert limits["rt/gpu"] == {"key": "rt/gpu", "value": "true", "limit": 2}
    assert limits["dagster/partition"]["value"] == {"applyLimitPerUniqueValue": True}
    assert concurrency.pool_config.default_pool_limit == 2
    assert concurrency.pool_config.pool_granularity == PoolGranularity.OP


#: (what, the mapping holding the key, the key, its misspelling)
MISSPELT = [
    ("top-level section", (), "run_monitoring", "run_monitorng"),
    ("run launcher field", ("run_launcher", "config"), "job_namespace", "job_namespce"),
    ("postgres field", ("run_storage", "config", "postgres_db"), "hostname", "hostnme"),
    ("run limit", ("concurrency", "runs"), "max_concurrent_runs", "max_concurent_runs"),
    ("pool field", ("concurrency", "pools"), "default_limit", "default_limt"),
    ("monitoring field", ("run_monitoring",), "poll_interval_seconds", "poll_interval_secs"),
]


@pytest.mark.parametrize("parents, key, wrong", [m[1:] for m in MISSPELT], ids=[m[0] for m in MISSPELT])
def test_a_misspelt_instance_key_fails(instance_yaml, tmp_path, pg_env, parents, key, wrong):
    config = copy.deepcopy(instance_yaml)
    node = config
    for part in parents:
        node = node[part]
    node[wrong] = node.pop(key)
    with pytest.raises(DagsterInvalidConfigError):
        validate_instance(config, tmp_path)


# ---------------------------------------------------------------------------------------------
# GPU steps: the op tags, and the pod dagster-k8s builds from them


def _requests_gpu(tags: dict) -> bool:
    config = get_user_defined_k8s_config(tags)  # parses and checks the tag like the executor does
    resources = config.container_config.get("resources", {})
    return GPU in resources.get("limits", {})


def _assert_gpu_step(tags: dict) -> None:
    config = get_user_defined_k8s_config(tags)
    resources = config.container_config["resources"]
    assert resources["limits"][GPU] == "1" and resources["requests"][GPU] == "1"
    tolerations = config.pod_spec_config["tolerations"]
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in tolerations


def test_segmentation_asset_requests_one_gpu():
    from rt_assets.definitions import defs

    _assert_gpu_step(defs.resolve_assets_def("totalseg_inference").op.tags)
    for name in ("ct_image", "dvh", "course_manifest", "structure_masks"):
        assert not _requests_gpu(defs.resolve_assets_def(name).op.tags), name


def _fake_model(models: Path, name: str) -> None:
    """A custom model folder as discover_models reads it (an empty checkpoint is enough here)."""
    folder = models / name
    (folder / "Dataset001_Test" / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "fold_0").mkdir(parents=True)
    (folder / "Dataset001_Test" / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "fold_0" / "checkpoint_final.pth").touch()
    (folder / "model.yaml").write_text(f"name: {name}\ndataset: Dataset001_Test\nlabels: {{1: liver}}\n")


def test_every_custom_model_asset_requests_one_gpu(tmp_path):
    from rt_assets.definitions import build_definitions

    _fake_model(tmp_path / "models", "organs")
    _fake_model(tmp_path / "models", "parotids")
    defs = build_definitions(load_settings(environ={"RT_MODELS_DIR": str(tmp_path / "models")}))
    for name in ("nnunet_organs", "nnunet_parotids"):
        _assert_gpu_step(defs.resolve_assets_def(name).op.tags)


def test_radiomics_requests_a_gpu_only_on_cuda(monkeypatch):
    import rt_resources.radiomics.backends as backends
    from rt_assets.definitions import build_definitions

    cpu = build_definitions(load_settings(environ={"RT_RADIOMICS_BACKEND": "fastrad"}))
    if backends.cuda_available():
        pytest.skip("this machine has CUDA: the CPU case cannot be built here")
    for name in ("radiomics", "radiomics_robustness"):
        assert not _requests_gpu(cpu.resolve_assets_def(name).op.tags), name
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    gpu = build_definitions(load_settings(environ={"RT_RADIOMICS_BACKEND": "fastrad"}))
    for name in ("radiomics", "radiomics_robustness"):
        _assert_gpu_step(gpu.resolve_assets_def(name).op.tags)


def _step_pod(values, deployment, tags) -> kubernetes.client.V1PodSpec:
    """The step pod the k8s_job_executor would create: the run launcher's config, the code
    location's container context (from the chart), then the step's dagster-k8s/config tag."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    context = (
        K8sContainerContext(
            image_pull_policy=launcher["imagePullPolicy"],
            service_account_name=FULLNAME,
            namespace=NAMESPACE,
            resources=launcher["resources"],
        )
        .merge(K8sContainerContext.create_from_config(_chart_container_context(deployment)))
        .merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags)))
    )
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    job_config = DagsterK8sJobConfig(
        job_image=image,
        dagster_home=CHART_DEFAULTS["dagsterHome"],
        instance_config_map=f"{FULLNAME}-instance",
        postgres_password_secret=values["global"]["postgresqlSecretName"],
    )
    job = construct_dagster_k8s_job(
        job_config,
        args=["dagster", "api", "execute_step"],
        job_name="dagster-step-test",
        user_defined_k8s_config=context.run_k8s_config,
    )
    return job.spec.template.spec


def test_gpu_step_pod_requests_the_gpu_and_keeps_the_volumes(values, deployment):
    from rt_assets.definitions import defs

    gpu_pod = _step_pod(values, deployment, defs.resolve_assets_def("totalseg_inference").op.tags)
    (container,) = gpu_pod.containers
    assert container.resources.limits[GPU] == "1" and container.resources.requests[GPU] == "1"
    # the run launcher's CPU and memory stay beside the GPU
    assert container.resources.requests["cpu"] == "4" and container.resources.limits["memory"] == "32Gi"
    assert any(t.key == GPU and t.effect == "NoSchedule" for t in gpu_pod.tolerations)
    assert {v.name for v in gpu_pod.volumes} == {v["name"] for v in deployment["volumes"]}
    assert {m.mount_path for m in container.volume_mounts} == {m["mountPath"] for m in deployment["volumeMounts"]}
    assert {e.config_map_ref.name for e in container.env_from if e.config_map_ref} == {
        f"{SUBCHART}-{CODE_LOCATION}-user-env"
    }
    assert {e.secret_ref.name for e in container.env_from if e.secret_ref} == {"rtpipeline-secrets"}
    assert container.image.endswith(deployment["image"]["tag"])

    cpu_pod = _step_pod(values, deployment, defs.resolve_assets_def("ct_image").op.tags)
    (container,) = cpu_pod.containers
    assert GPU not in (container.resources.limits or {}) and GPU not in (container.resources.requests or {})
    assert not cpu_pod.tolerations


# ---------------------------------------------------------------------------------------------
# The image


def test_dockerfile_builds_from_files_that_exist():
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", text, re.MULTILINE)
    assert "download.pytorch.org/whl/${TORCH_VARIANT}" in text
    assert not re.search(r"^ENTRYPOINT", text, re.MULTILINE), "the chart starts the code server with args"
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, _dest = line.split()[1:]
            for source in sources:
                assert (REPO / source).exists(), source
                assert f"!{source}" in ignore, f"{source} is filtered out of the build context"


def test_compose_builds_the_image_from_deploy_docker():
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    build = compose["x-rtpipeline"]["build"]
    context = (DOCKER / build["context"]).resolve()
    assert context == REPO and (context / build["dockerfile"]).is_file()
    assert {"daemon", "receive", "ui"} <= set(compose["services"])
    assert compose["services"]["receive"]["command"] == ["rtpipeline", "receive"]
    assert not (DEPLOY / "Dockerfile").exists() and not (DEPLOY / "docker-compose.yml").exists()
