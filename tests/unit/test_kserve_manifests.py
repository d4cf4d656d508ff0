"""serving/kserve: both overlays render with kubectl kustomize (what `make kserve` runs); every
field we set exists in KServe's API; the runtime's args are the launcher's flag list with KServe's
ports and model path; the pod parts validate against the Kubernetes schemas; the mounted configs
parse with TF Serving's protos; the container is locked down like serving/k8s's Deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version
from xception_serving import launch_tfserving
from xception_serving.config import files as config_files

from tests.fixtures.kustomize import render

ROOT = Path(__file__).resolve().parents[2]
KSERVE = ROOT / "serving" / "kserve"
OVERLAYS = ("cpu", "gpu")
GPU = "nvidia.com/gpu"
# KServe's fixed layout: REST 8080, gRPC 9000, the storage initializer's copy at /mnt/models.
KSERVE_GRPC_PORT, KSERVE_REST_PORT, KSERVE_MODEL_PATH = 9000, 8080, "/mnt/models"
CONFIG_DIR = "/config"
# (overlay, ConfigMap key) -> the file under serving/ it must equal byte for byte.
SOURCE_CONFIGS = {
    ("gpu", "batching.config"): "batching.config",
    ("cpu", "batching.config"): "batching-cpu.config",
    ("gpu", "monitoring.config"): "monitoring.config",
    ("cpu", "monitoring.config"): "monitoring.config",
}

Manifest = dict[str, Any]

# --- KServe's API: the JSON field names of the structs we write -----------------------------
# Read from kserve/kserve's Go types (json tags; `json:",inline"` embeds are flattened here):
#   pkg/apis/serving/v1alpha1/servingruntime_types.go: ServingRuntimeSpec, ServingRuntimePodSpec,
#     SupportedModelFormat; protocol values from pkg/constants (v1, v2, grpc-v1, grpc-v2).
#   pkg/apis/serving/v1beta1/predictor.go: PredictorSpec, PredictorExtensionSpec (inlines
#     corev1.Container); predictor_model.go: ModelSpec, ModelFormat; component.go:
#     ComponentExtensionSpec and the ScaleMetric enum. PredictorSpec also inlines PodSpec (the
#     core/v1 PodSpec fields, of which we use tolerations).
# Only fields a spec here could plausibly use are listed; an unknown key fails the test (a typo such
# as `scaleTargets` would otherwise be dropped silently by the API server's pruning).
SERVING_RUNTIME_POD_SPEC = {
    "containers", "volumes", "nodeSelector", "affinity", "tolerations", "labels", "annotations",
    "imagePullSecrets", "hostIPC",
}  # fmt: skip
SERVING_RUNTIME_SPEC = SERVING_RUNTIME_POD_SPEC | {
    "supportedModelFormats", "multiModel", "disabled", "protocolVersions", "workerSpec",
    "grpcEndpoint", "grpcDataEndpoint", "httpDataEndpoint", "replicas", "storageHelper",
    "builtInAdapter",
}  # fmt: skip
SUPPORTED_MODEL_FORMAT = {"name", "version", "autoSelect", "priority"}
PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}
COMPONENT_EXTENSION_SPEC = {
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency", "timeout",
    "canaryTrafficPercent", "logger", "batcher", "labels", "annotations", "deploymentStrategy",
}  # fmt: skip
POD_SPEC_USED = {"tolerations", "nodeSelector", "affinity", "containers", "volumes"}
PREDICTOR_SPEC = (
    {"sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "huggingface", "pmml",
     "lightgbm", "paddle", "model", "storageUris", "workerSpec"}
    | POD_SPEC_USED
    | COMPONENT_EXTENSION_SPEC
)  # fmt: skip
CONTAINER_USED = {"name", "image", "args", "command", "env", "resources", "ports", "volumeMounts"}
MODEL_SPEC = {"modelFormat", "runtime", "storageUri", "runtimeVersion", "protocolVersion",
              "storage"} | CONTAINER_USED  # fmt: skip
MODEL_FORMAT = {"name", "version"}
SCALE_METRICS = {"cpu", "memory", "concurrency", "rps"}
INFERENCE_SERVICE_SPEC = {"predictor", "transformer", "explainer"}


def _unknown(obj: Manifest, allowed: set[str], where: str) -> list[str]:
    return [f"{where}.{key}" for key in obj if key not in allowed]


def kserve_field_errors(doc: Manifest) -> list[str]:
    """Every key of ours that KServe's API does not define, as dotted paths."""
    spec = doc["spec"]
    if doc["kind"] == "ServingRuntime":
        assert doc["apiVersion"] == "serving.kserve.io/v1alpha1"
        errors = _unknown(spec, SERVING_RUNTIME_SPEC, "spec")
        for fmt in spec.get("supportedModelFormats", []):
            errors += _unknown(fmt, SUPPORTED_MODEL_FORMAT, "spec.supportedModelFormats[]")
        errors += [f"protocol {p}" for p in spec.get("protocolVersions", []) if p not in PROTOCOLS]
        return errors
    assert doc["kind"] == "InferenceService"
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1"
    errors = _unknown(spec, INFERENCE_SERVICE_SPEC, "spec")
    predictor = spec["predictor"]
    errors += _unknown(predictor, PREDICTOR_SPEC, "spec.predictor")
    if predictor.get("scaleMetric") not in (None, *SCALE_METRICS):
        errors.append(f"spec.predictor.scaleMetric {predictor['scaleMetric']}")
    model = predictor.get("model", {})
    errors += _unknown(model, MODEL_SPEC, "spec.predictor.model")
    model_format = model.get("modelFormat", {})
    errors += _unknown(model_format, MODEL_FORMAT, "spec.predictor.model.modelFormat")
    return errors


# --- rendering ---------------------------------------------------------------------------------


def _render(overlay: str) -> tuple[Manifest, ...]:
    return render(KSERVE / "overlays" / overlay)


def _one(docs: tuple[Manifest, ...], kind: str) -> Manifest:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{kind}: {len(found)} found"
    return found[0]


def _server(docs: tuple[Manifest, ...]) -> Manifest:
    [container] = _one(docs, "ServingRuntime")["spec"]["containers"]
    return container


def expected_args(*, gpu: bool) -> list[str]:
    """server_flags with KServe's ports, and --model_name/--model_base_path in place of
    models.config (KServe names the model after the InferenceService and mounts it itself)."""
    flags = launch_tfserving.server_flags(
        config_dir=CONFIG_DIR,
        grpc_port=KSERVE_GRPC_PORT,
        rest_port=KSERVE_REST_PORT,
        gpu_memory_fraction=launch_tfserving.DEFAULT_GPU_MEMORY_FRACTION if gpu else None,
    )
    flags = [f for f in flags if not f.startswith("--model_config_file")]
    model = ["--model_name={{.Name}}", f"--model_base_path={KSERVE_MODEL_PATH}"]
    return [*model, *flags, "--rest_api_timeout_in_ms=60000"]  # KServe's stock REST timeout


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_overlay_renders_a_runtime_its_config_map_and_an_inference_service(overlay: str) -> None:
    kinds = sorted(d["kind"] for d in _render(overlay))
    assert kinds == ["ConfigMap", "InferenceService", "ServingRuntime"]


def test_every_field_we_set_is_in_kserves_api(overlay: str) -> None:
    for doc in _render(overlay):
        if doc["kind"] != "ConfigMap":
            assert kserve_field_errors(doc) == [], doc["kind"]


def test_the_field_check_catches_a_misspelled_field() -> None:
    isvc = yaml.safe_load(yaml.safe_dump(_one(_render("gpu"), "InferenceService")))
    isvc["spec"]["predictor"]["scaleTargets"] = 16
    isvc["spec"]["predictor"]["model"]["storageURI"] = "gs://x"
    assert kserve_field_errors(isvc) == [
        "spec.predictor.scaleTargets",
        "spec.predictor.model.storageURI",
    ]


def test_runtime_pod_parts_validate_strictly_against_the_kubernetes_schemas(overlay: str) -> None:
    spec = _one(_render(overlay), "ServingRuntime")["spec"]
    # KServe builds the predictor pod from these core/v1 Containers and Volumes; a Pod that holds
    # them must be valid. ({{.Name}} in args is a string either way.)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "xception-predictor", "annotations": spec["annotations"]},
        "spec": {
            "containers": spec["containers"],
            "volumes": spec["volumes"],
            "tolerations": _one(_render(overlay), "InferenceService")["spec"]["predictor"].get(
                "tolerations", []
            ),
        },
    }
    version = latest_version()
    kubernetes_validate.validate(pod, version, strict=True)
    model = _one(_render(overlay), "InferenceService")["spec"]["predictor"]["model"]
    pod["spec"]["containers"] = [{"name": "kserve-container", "resources": model["resources"]}]
    kubernetes_validate.validate(pod, version, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(pod))
    broken["spec"]["containers"][0]["resource"] = broken["spec"]["containers"][0].pop("resources")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_runtime_args_are_the_launchers_flags_with_kserves_ports_and_model_path() -> None:
    assert _server(_render("gpu"))["args"] == expected_args(gpu=True)
    assert _server(_render("cpu"))["args"] == expected_args(gpu=False)
    assert _server(_render("gpu"))["command"] == [launch_tfserving.CONTAINER_BINARY]
    assert _server(_render("gpu"))["image"] == launch_tfserving.GPU_IMAGE
    assert _server(_render("cpu"))["image"] == launch_tfserving.CPU_IMAGE
    [port] = _server(_render("gpu"))["ports"]
    assert (port["name"], port["containerPort"]) == ("h2c", KSERVE_GRPC_PORT)


def test_mounted_configs_are_the_serving_configs_and_parse_with_tf_servings_protos(
    overlay: str,
) -> None:
    docs = _render(overlay)
    config_map = _one(docs, "ConfigMap")
    data = config_map["data"]
    assert sorted(data) == ["batching.config", "monitoring.config"]
    for name, text in data.items():
        assert text == (ROOT / "serving" / SOURCE_CONFIGS[(overlay, name)]).read_text(), name
    params = config_files.parse_text_proto(data["batching.config"], config_files.BatchingParameters)
    config_files.validate_batching_parameters(params)
    monitoring = config_files.parse_text_proto(
        data["monitoring.config"], config_files.MonitoringConfig
    )
    # Every file the args name is in the ConfigMap mounted at its directory (hashed name resolved).
    server = _server(docs)
    volumes = {v["name"]: v for v in _one(docs, "ServingRuntime")["spec"]["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in server["volumeMounts"]}
    flags = dict(arg[2:].split("=", 1) for arg in server["args"])
    for flag in ("batching_parameters_file", "monitoring_config_file"):
        directory, filename = flags[flag].rsplit("/", 1)
        assert mounts[directory]["configMap"]["name"] == config_map["metadata"]["name"]
        assert filename in data
    # Scrape annotations: TF Serving's real path, on the REST port.
    annotations = _one(docs, "ServingRuntime")["spec"]["annotations"]
    path = config_files.prometheus_path(monitoring)
    assert path == "/monitoring/prometheus/metrics"
    for prefix in ("prometheus.kserve.io", "prometheus.io"):
        assert annotations[f"{prefix}/path"] == path
        assert annotations[f"{prefix}/port"] == flags["rest_api_port"]


def test_gpu_batch_threads_match_the_cpus_the_runtime_reserves() -> None:
    docs = _render("gpu")
    params = config_files.parse_text_proto(
        _one(docs, "ConfigMap")["data"]["batching.config"], config_files.BatchingParameters
    )
    assert params.num_batch_threads.value == int(_server(docs)["resources"]["limits"]["cpu"])


def test_runtime_container_is_locked_down_like_the_deployment(overlay: str) -> None:
    server = _server(_render(overlay))
    context = server["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] != 0
    assert context["allowPrivilegeEscalation"] is False
    assert context["privileged"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in _one(_render(overlay), "ServingRuntime")["spec"]["volumes"]}
    for mount in server["volumeMounts"]:
        if not mount.get("readOnly"):
            assert "emptyDir" in volumes[mount["name"]], mount["mountPath"]
    assert server["resources"]["requests"] == server["resources"]["limits"]


def test_inference_service_uses_the_runtime_and_asks_for_a_gpu_only_on_gpu(overlay: str) -> None:
    docs = _render(overlay)
    runtime = _one(docs, "ServingRuntime")
    predictor = _one(docs, "InferenceService")["spec"]["predictor"]
    model = predictor["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = runtime["spec"]["supportedModelFormats"]
    assert model["modelFormat"] in [{"name": f["name"], "version": f["version"]} for f in formats]
    assert model["storageUri"].startswith(("gs://", "s3://", "pvc://", "https://"))
    resources = model["resources"]
    assert resources["requests"] == resources["limits"]
    assert (GPU in resources["limits"]) is (overlay == "gpu")
    if overlay == "gpu":
        assert resources["limits"][GPU] == "1"
        assert any(t["key"] == GPU for t in predictor["tolerations"])
    # The runtime's defaults and the InferenceService agree, so neither overrides the other.
    cpu_mem = {k: v for k, v in resources["limits"].items() if k != GPU}
    assert cpu_mem == _server(docs)["resources"]["limits"]


def test_inference_service_autoscales_on_concurrency(overlay: str) -> None:
    isvc = _one(_render(overlay), "InferenceService")
    annotations = isvc["metadata"]["annotations"]
    predictor = isvc["spec"]["predictor"]
    assert annotations["autoscaling.knative.dev/metric"] == "concurrency"
    assert predictor["scaleMetric"] == "concurrency"
    assert int(annotations["autoscaling.knative.dev/target"]) == predictor["scaleTarget"] > 0
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
