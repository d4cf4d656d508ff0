"""serving/k8s/components/verify: the verify Job renders alone (overlays/verify) and inside each
serving overlay, validates against the Kubernetes schemas, and points at what the Deployment
serves: the headless Service's gRPC port, the model name, the same volume and base path."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate.utils import latest_version
from xception_contract import DEFAULT_MODEL_NAME

from tests.fixtures.kustomize import render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "serving" / "k8s"


def _render(path: Path) -> list[dict[str, Any]]:
    return list(render(path))


def _job(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [job] = [d for d in docs if d["kind"] == "Job"]
    return job


def test_verify_overlay_renders_only_the_job_and_validates() -> None:
    docs = _render(K8S / "overlays" / "verify")
    assert [d["kind"] for d in docs] == ["Job"]
    kubernetes_validate.validate(docs[0], latest_version(), strict=True)


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_serving_overlays_can_include_the_component(overlay: str, tmp_path: Path) -> None:
    # An operator's overlay: kustomize wants relative paths to other kustomization roots.
    base = os.path.relpath(K8S / "overlays" / overlay, tmp_path)
    component = os.path.relpath(K8S / "components" / "verify", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {base}\ncomponents:\n  - {component}\n"
    )
    docs = _render(tmp_path)
    # The monitoring component's custom resources have no schema in kubernetes-validate
    # (tests/unit/test_k8s_monitoring.py checks them).
    for doc in docs:
        if doc["kind"] not in ("PrometheusRule", "ServiceMonitor"):
            kubernetes_validate.validate(doc, latest_version(), strict=True)
    job = _job(docs)
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    pod = job["spec"]["template"]["spec"]
    [verify] = pod["containers"]
    args = verify["args"]
    assert args[:2] == ["verify", "/models/xception"]
    server = next(a.split("=", 1)[1] for a in args if a.startswith("--server="))
    host, port = server.removeprefix("dns:///").rsplit(":", 1)
    assert services[host]["spec"]["clusterIP"] == "None"  # headless: every replica
    assert int(port) == services[host]["spec"]["ports"][0]["port"]
    assert f"--model={DEFAULT_MODEL_NAME}" in args
    # The artifact the Job reads is the volume and base path the servers load.
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    served = {
        v["persistentVolumeClaim"]["claimName"]
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    mount = next(m for m in verify["volumeMounts"] if m["name"] in claims)
    assert claims[mount["name"]] in served and mount["readOnly"] is True
    assert args[1].startswith(mount["mountPath"].rstrip("/") + "/")
    # The wait polls the REST Service's model status, as the Deployment's readiness probe does.
    [wait] = pod["initContainers"]
    assert f"http://xception-rest:8501/v1/models/{DEFAULT_MODEL_NAME}" in wait["command"][2]
    assert "xception-rest" in services


def test_job_fails_at_once_on_a_difference_and_runs_locked_down() -> None:
    job = _job(_render(K8S / "overlays" / "verify"))
    spec = job["spec"]
    [fail] = [r for r in spec["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert fail["onExitCodes"] == {"containerName": "verify", "operator": "In", "values": [1, 2]}
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"] is True
    for container in [*pod["initContainers"], *pod["containers"]]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert container["resources"]["requests"] == container["resources"]["limits"]


def test_wait_script_loops_until_the_model_is_available(tmp_path: Path) -> None:
    # Run the init container's script with a fake wget: unavailable twice, then AVAILABLE.
    [wait] = _job(_render(K8S / "overlays" / "verify"))["spec"]["template"]["spec"][
        "initContainers"
    ]
    fake = tmp_path / "wget"
    counter = tmp_path / "calls"
    fake.write_text(
        f"#!/bin/sh\nn=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}\n"
        'if [ $n -ge 3 ]; then echo \'{"state" : "AVAILABLE"}\'; else exit 4; fi\n'
    )
    fake.chmod(0o755)
    script = wait["command"][2].replace("sleep 10", "sleep 0")
    result = subprocess.run(
        ["sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert counter.read_text().strip() == "3"
    assert result.stdout.count("waiting for model xception") == 2
