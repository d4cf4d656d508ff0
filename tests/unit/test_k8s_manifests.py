"""serving/k8s: both overlays render with kubectl kustomize (what `make k8s` runs), validate against
the Kubernetes schemas, and hang together: selectors match, probes hit TF Serving's REST model
status endpoint, requests equal limits, containers are locked down, the gpu overlay asks for a GPU,
and the ConfigMap carries the same configs TF Serving and the local server read."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version
from xception_contract import DEFAULT_MODEL_NAME
from xception_serving import launch_tfserving
from xception_serving.config import files as config_files

from tests.fixtures.kustomize import render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "serving" / "k8s"
OVERLAYS = ("cpu", "gpu")
CONFIG_FILES = ("models.config", "batching.config", "monitoring.config")
# (overlay, ConfigMap key) -> the file under serving/ it must equal.
SOURCE_CONFIGS = {(overlay, name): name for overlay in OVERLAYS for name in CONFIG_FILES} | {
    ("cpu", "batching.config"): "batching-cpu.config"
}
GPU = "nvidia.com/gpu"
CUSTOM_KINDS = ("PrometheusRule", "ServiceMonitor")
CONFIG_MAP = "xception-tfserving-config"

Manifest = dict[str, Any]


def _render(overlay: str) -> tuple[Manifest, ...]:
    return render(K8S / "overlays" / overlay)


def _one(docs: tuple[Manifest, ...], kind: str, name: str | None = None) -> Manifest:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def _config_map(docs: tuple[Manifest, ...]) -> Manifest:
    """The servers' config ConfigMap (its name carries a content hash)."""
    found = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(CONFIG_MAP + "-")
    ]
    assert len(found) == 1, f"ConfigMap {CONFIG_MAP}-<hash>: {len(found)} found"
    return found[0]


def _pod(docs: tuple[Manifest, ...]) -> Manifest:
    template: Manifest = _one(docs, "Deployment")["spec"]["template"]
    return template


def _server(docs: tuple[Manifest, ...]) -> Manifest:
    [container] = [c for c in _pod(docs)["spec"]["containers"] if c["name"] == "tfserving"]
    server: Manifest = container
    return server


@pytest.fixture(params=OVERLAYS)
def docs(request: pytest.FixtureRequest) -> tuple[Manifest, ...]:
    return _render(request.param)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_resource_the_deployment_needs(overlay: str) -> None:
    kinds = sorted(d["kind"] for d in _render(overlay))
    assert kinds == sorted(
        [
            "ConfigMap",
            "ConfigMap",  # the Grafana dashboard (components/monitoring)
            "Deployment",
            "HorizontalPodAutoscaler",
            "PersistentVolumeClaim",
            "PodDisruptionBudget",
            "Service",
            "Service",
            # components/monitoring; tests/unit/test_k8s_monitoring.py checks them.
            "PrometheusRule",
            "ServiceMonitor",
        ]
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_strictly_against_the_kubernetes_schemas(overlay: str) -> None:
    version = latest_version()
    # kubernetes-validate has schemas for built-in kinds only; the Prometheus Operator's custom
    # resources are checked field by field in tests/unit/test_k8s_monitoring.py.
    docs = [d for d in _render(overlay) if d["kind"] not in CUSTOM_KINDS]
    assert len(docs) == len(_render(overlay)) - len(CUSTOM_KINDS)
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_schema_validation_rejects_a_broken_deployment() -> None:
    deployment = yaml.safe_load(yaml.safe_dump(_one(_render("gpu"), "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, latest_version(), strict=True)


def test_example_model_loader_pod_validates() -> None:
    loader = yaml.safe_load((K8S / "examples" / "model-loader.yaml").read_text())
    kubernetes_validate.validate(loader, latest_version(), strict=True)
    [volume] = loader["spec"]["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == "xception-models"


def test_selectors_match_the_pod_labels(docs: tuple[Manifest, ...]) -> None:
    labels = _pod(docs)["metadata"]["labels"]
    deployment = _one(docs, "Deployment")
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        _one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        *(service["spec"]["selector"] for service in docs if service["kind"] == "Service"),
    ]
    for selector in selectors:
        assert selector and selector.items() <= labels.items()
    hpa = _one(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (hpa["kind"], hpa["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_grpc_service_is_headless_and_rest_service_is_cluster_ip(
    docs: tuple[Manifest, ...],
) -> None:
    ports = {p["name"]: p["containerPort"] for p in _server(docs)["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}
    grpc = _one(docs, "Service", "xception-grpc-headless")["spec"]
    assert grpc["clusterIP"] == "None"
    assert [(p["port"], p["targetPort"]) for p in grpc["ports"]] == [(8500, "grpc")]
    rest = _one(docs, "Service", "xception-rest")["spec"]
    assert rest["type"] == "ClusterIP"
    assert [(p["port"], p["targetPort"]) for p in rest["ports"]] == [(8501, "http")]


def test_probes_poll_tf_servings_rest_model_status_endpoint(docs: tuple[Manifest, ...]) -> None:
    server = _server(docs)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        http = server[probe]["httpGet"]
        assert (http["path"], http["port"]) == (f"/v1/models/{DEFAULT_MODEL_NAME}", "http")


def test_every_container_requests_exactly_its_limits(docs: tuple[Manifest, ...]) -> None:
    spec = _pod(docs)["spec"]
    for container in [*spec["initContainers"], *spec["containers"]]:
        resources = container["resources"]
        assert resources["requests"], container["name"]
        assert resources["requests"] == resources["limits"], container["name"]


def test_only_the_gpu_overlay_asks_for_a_gpu() -> None:
    gpu = _server(_render("gpu"))
    assert gpu["resources"]["limits"][GPU] == "1"
    assert gpu["image"] == launch_tfserving.GPU_IMAGE
    assert GPU not in _server(_render("cpu"))["resources"]["limits"]
    assert _server(_render("cpu"))["image"] == launch_tfserving.CPU_IMAGE


def test_containers_run_locked_down(docs: tuple[Manifest, ...]) -> None:
    spec = _pod(docs)["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["automountServiceAccountToken"] is False
    for container in [*spec["initContainers"], *spec["containers"]]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]


def test_writable_paths_are_empty_dirs_and_inputs_are_read_only(docs: tuple[Manifest, ...]) -> None:
    spec = _pod(docs)["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in _server(docs)["volumeMounts"]:
        volume = volumes[mount["name"]]
        if mount.get("readOnly"):
            continue
        assert "emptyDir" in volume, f"{mount['mountPath']} is writable but not an emptyDir"
    writable = {m["mountPath"] for m in _server(docs)["volumeMounts"] if not m.get("readOnly")}
    assert "/tmp" in writable
    models = volumes["models"]["persistentVolumeClaim"]
    assert models["readOnly"] is True
    _one(docs, "PersistentVolumeClaim", models["claimName"])


def test_server_args_are_the_launchers_flags_with_the_gpu_cap_only_on_gpu() -> None:
    cpu_args = _server(_render("cpu"))["args"]
    assert cpu_args == launch_tfserving.server_flags(
        config_dir=launch_tfserving.CONTAINER_CONFIG_DIR, gpu_memory_fraction=None
    )
    assert _server(_render("gpu"))["args"] == launch_tfserving.server_flags(
        config_dir=launch_tfserving.CONTAINER_CONFIG_DIR
    )
    assert _server(_render("gpu"))["command"] == [launch_tfserving.CONTAINER_BINARY]


def test_every_file_the_args_name_is_in_the_mounted_config_map(docs: tuple[Manifest, ...]) -> None:
    server = _server(docs)
    volumes = {v["name"]: v for v in _pod(docs)["spec"]["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in server["volumeMounts"]}
    config_map = _config_map(docs)
    flags = dict(arg[2:].split("=", 1) for arg in server["args"])
    for name in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        directory, filename = flags[name].rsplit("/", 1)
        assert mounts[directory]["configMap"]["name"] == config_map["metadata"]["name"]
        assert filename in config_map["data"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_map_configs_parse_and_equal_the_serving_configs(overlay: str) -> None:
    docs = _render(overlay)
    data = _config_map(docs)["data"]
    assert sorted(data) == sorted(CONFIG_FILES)
    for name in CONFIG_FILES:
        # One source of truth: each overlay's copies must be byte-identical to serving/*.config,
        # with the CPU batching file on CPU nodes (GPU padding would multiply CPU work).
        source = SOURCE_CONFIGS[(overlay, name)]
        assert data[name] == (ROOT / "serving" / source).read_text(), name
    [model] = config_files.parse_text_proto(
        data["models.config"], config_files.ModelServerConfig
    ).model_config_list.config
    assert model.name == DEFAULT_MODEL_NAME
    assert model.base_path.startswith("/models/")
    params = config_files.parse_text_proto(data["batching.config"], config_files.BatchingParameters)
    config_files.validate_batching_parameters(params)
    monitoring = config_files.parse_text_proto(
        data["monitoring.config"], config_files.MonitoringConfig
    )
    path = config_files.prometheus_path(monitoring)
    annotations = _pod(docs)["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == path
    assert annotations["prometheus.io/port"] == "8501"


def test_models_volume_holds_the_base_path_models_config_names(docs: tuple[Manifest, ...]) -> None:
    data = _config_map(docs)["data"]
    [model] = config_files.parse_text_proto(
        data["models.config"], config_files.ModelServerConfig
    ).model_config_list.config
    models_mount = next(m for m in _server(docs)["volumeMounts"] if m["name"] == "models")
    assert model.base_path.startswith(models_mount["mountPath"].rstrip("/") + "/")


def test_gpu_overlay_caps_batch_threads_at_its_cpus() -> None:
    params = config_files.parse_text_proto(
        _config_map(_render("gpu"))["data"]["batching.config"],
        config_files.BatchingParameters,
    )
    cpus = int(_server(_render("gpu"))["resources"]["limits"]["cpu"])
    assert params.num_batch_threads.value == cpus


def _check_model_script(docs: tuple[Manifest, ...]) -> str:
    [init] = _pod(docs)["spec"]["initContainers"]
    assert init["command"][:2] == ["sh", "-c"]
    return str(init["command"][2])


@pytest.mark.parametrize(
    ("layout", "ok"),
    [
        ({"1/saved_model.pb": ""}, True),
        ({"v1/saved_model.pb": "", "7/saved_model.pbtxt": ""}, True),
        ({"v1/saved_model.pb": "", ".incoming-2/saved_model.pb": ""}, False),
        ({"3/variables/variables.index": ""}, False),
        ({}, False),
    ],
)
def test_init_container_accepts_only_a_numeric_version_with_a_saved_model(
    layout: dict[str, str], ok: bool, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    (root / "xception").mkdir(parents=True)
    for relative, content in layout.items():
        path = root / "xception" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    script = _check_model_script(_render("cpu")).replace("/models/", f"{root}/")
    result = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert (result.returncode == 0) is ok, result.stderr
    if not ok:
        assert "saved_model.pb" in result.stderr
