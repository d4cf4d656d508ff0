"""serving/docker-compose.yml starts the same TF Serving as run-tfserving.sh: pinned GPU image, a
GPU device reservation, ports 8500/8501, the same flags, and every file they name mounted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from xception_serving import launch_tfserving
from xception_serving.config import files as config_files

SERVING = Path(__file__).resolve().parents[2] / "serving"


@pytest.fixture(scope="module")
def service() -> dict[str, Any]:
    compose = yaml.safe_load((SERVING / "docker-compose.yml").read_text())
    services = compose["services"]
    assert list(services) == ["tfserving"]
    return services["tfserving"]


def test_compose_runs_the_pinned_gpu_image_with_an_explicit_entrypoint(
    service: dict[str, Any],
) -> None:
    assert service["image"] == launch_tfserving.GPU_IMAGE
    assert service["entrypoint"] == [launch_tfserving.CONTAINER_BINARY]


def test_compose_reserves_the_gpus(service: dict[str, Any]) -> None:
    [device] = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["count"] == "all"
    assert device["capabilities"] == ["gpu"]


def test_compose_publishes_grpc_and_rest_ports(service: dict[str, Any]) -> None:
    assert service["ports"] == ["8500:8500", "8501:8501"]


def test_compose_passes_exactly_the_launchers_flags(service: dict[str, Any]) -> None:
    assert service["command"] == launch_tfserving.server_flags(
        config_dir=launch_tfserving.CONTAINER_CONFIG_DIR
    )


def test_compose_mounts_every_file_the_flags_name_read_only(service: dict[str, Any]) -> None:
    mounts = {volume["target"]: volume for volume in service["volumes"]}
    flags = dict(arg[2:].split("=", 1) for arg in service["command"])
    for name in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        mount = mounts[flags[name]]
        assert mount["type"] == "bind" and mount["read_only"] is True
        assert (SERVING / mount["source"]).resolve().parent == SERVING  # relative to serving/
    [model] = config_files.read_model_server_config(
        SERVING / mounts[flags["model_config_file"]]["source"]
    ).model_config_list.config
    model_mount = mounts[model.base_path]
    assert model_mount["type"] == "bind" and model_mount["read_only"] is True


def test_compose_keeps_the_cuda_jit_cache_in_the_launchers_volume(service: dict[str, Any]) -> None:
    compose = yaml.safe_load((SERVING / "docker-compose.yml").read_text())
    mounts = {volume["target"]: volume for volume in service["volumes"]}
    cache = mounts[launch_tfserving.CONTAINER_CUDA_CACHE]
    assert cache["type"] == "volume"
    assert compose["volumes"][cache["source"]]["name"] == launch_tfserving.CUDA_CACHE_VOLUME
    assert service["environment"]["CUDA_CACHE_PATH"] == launch_tfserving.CONTAINER_CUDA_CACHE
