"""The TF Serving launch command: docker and binary modes use TF Serving's exact flag names, and
every path the server is told about exists where it runs (mounted in the container, or on the
host)."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path
from typing import Any

import pytest
from xception_contract import DEFAULT_MODEL_NAME
from xception_serving import launch_tfserving
from xception_serving.config import files as config_files

ROOT = Path(__file__).resolve().parents[2]
SERVING = ROOT / "serving"

# tensorflow_model_server flag names (its main.cc flag list), the ones we pass.
TF_SERVING_FLAGS = {
    "port",
    "rest_api_port",
    "model_config_file",
    "model_config_file_poll_wait_seconds",
    "file_system_poll_wait_seconds",
    "enable_batching",
    "batching_parameters_file",
    "monitoring_config_file",
    "enable_model_warmup",
    "enable_grpc_healthcheck_service",
    "grpc_channel_arguments",
    "per_process_gpu_memory_fraction",
    "ssl_config_file",
}


def _settings(model_dir: Path, **changes: Any) -> launch_tfserving.ServeSettings:
    """The repository's config files and work directory (what serving/run-tfserving.sh passes)."""
    settings = launch_tfserving.ServeSettings(
        model_dir, config_dir=SERVING, work_dir=ROOT / "build" / "tfserving"
    )
    return dataclasses.replace(settings, **changes)


def _default_docker_command(model_dir: Path) -> list[str]:
    return launch_tfserving.docker_command(_settings(model_dir))


def _flags(args: list[str]) -> dict[str, str]:
    parsed = {}
    for arg in args:
        assert arg.startswith("--") and "=" in arg, f"not --flag=value: {arg}"
        name, value = arg[2:].split("=", 1)
        parsed[name] = value
    return parsed


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    base = tmp_path / "models" / DEFAULT_MODEL_NAME
    (base / "1").mkdir(parents=True)
    return base


def _docker_parts(command: list[str]) -> tuple[list[str], list[str]]:
    """(docker options, TF Serving flags) split at the image."""
    image_at = command.index(launch_tfserving.GPU_IMAGE)
    return command[:image_at], command[image_at + 1 :]


def _mounts(options: list[str]) -> dict[str, tuple[str, str]]:
    """container path -> (host source, mode)."""
    mounts = {}
    for i, option in enumerate(options):
        if option == "-v":
            source, target, *mode = options[i + 1].split(":")
            mounts[target] = (source, mode[0] if mode else "rw")
    return mounts


def test_docker_command_runs_the_pinned_gpu_image_on_all_gpus(model_dir: Path) -> None:
    options, _ = _docker_parts(_default_docker_command(model_dir))
    assert launch_tfserving.GPU_IMAGE.startswith("tensorflow/serving:2.")
    image = launch_tfserving.GPU_IMAGE
    assert image.endswith("-gpu") and "latest" not in image
    assert options[:2] == ["docker", "run"]
    assert options[options.index("--gpus") + 1] == "all"
    assert options[options.index("--entrypoint") + 1] == launch_tfserving.CONTAINER_BINARY
    published = {options[i + 1] for i, o in enumerate(options) if o == "-p"}
    assert published == {"8500:8500", "8501:8501"}


def test_docker_command_passes_every_required_tf_serving_flag(model_dir: Path) -> None:
    _, args = _docker_parts(_default_docker_command(model_dir))
    flags = _flags(args)
    assert set(flags) <= TF_SERVING_FLAGS
    assert flags["port"] == "8500" and flags["rest_api_port"] == "8501"
    assert flags["enable_batching"] == "true"
    assert flags["enable_model_warmup"] == "true"
    assert 0 < float(flags["per_process_gpu_memory_fraction"]) < 1
    for name in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        assert flags[name].startswith(launch_tfserving.CONTAINER_CONFIG_DIR + "/")


def test_docker_command_mounts_every_file_the_flags_name_read_only(model_dir: Path) -> None:
    options, args = _docker_parts(_default_docker_command(model_dir))
    mounts = _mounts(options)
    flags = _flags(args)
    for name in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        source, mode = mounts[flags[name]]
        assert Path(source).is_file() and mode == "ro"
        assert Path(source).parent == SERVING
    # The models.config inside the container points at where the export is mounted.
    [model] = config_files.read_model_server_config(
        mounts[flags["model_config_file"]][0]
    ).model_config_list.config
    assert mounts[model.base_path] == (str(model_dir), "ro")


def test_docker_command_keeps_the_cuda_jit_cache_in_a_named_volume(model_dir: Path) -> None:
    options, _ = _docker_parts(_default_docker_command(model_dir))
    source, _ = _mounts(options)[launch_tfserving.CONTAINER_CUDA_CACHE]
    assert not source.startswith("/")  # a named volume, not a host path
    env = {options[i + 1] for i, o in enumerate(options) if o == "-e"}
    assert f"CUDA_CACHE_PATH={launch_tfserving.CONTAINER_CUDA_CACHE}" in env


def test_docker_command_maps_chosen_host_ports_to_tf_servings_fixed_container_ports(
    model_dir: Path,
) -> None:
    settings = _settings(model_dir, grpc_port=9000, rest_port=9001)
    options, args = _docker_parts(launch_tfserving.docker_command(settings))
    published = {options[i + 1] for i, o in enumerate(options) if o == "-p"}
    assert published == {"9000:8500", "9001:8501"}
    assert _flags(args)["port"] == "8500"


def test_docker_command_mounts_and_passes_an_ssl_config(model_dir: Path, tmp_path: Path) -> None:
    ssl = tmp_path / "ssl.config"
    ssl.write_text("client_verify: false\n")
    settings = _settings(model_dir, ssl_config_file=ssl)
    options, args = _docker_parts(launch_tfserving.docker_command(settings))
    in_container = _flags(args)["ssl_config_file"]
    assert _mounts(options)[in_container] == (str(ssl), "ro")


def test_docker_command_appends_extra_flags_last(model_dir: Path) -> None:
    settings = _settings(model_dir, extra_flags=("--mixed_precision=bfloat16",))
    assert launch_tfserving.docker_command(settings)[-1] == "--mixed_precision=bfloat16"


def test_binary_command_reads_host_paths_and_a_rebased_models_config(
    model_dir: Path, tmp_path: Path
) -> None:
    settings = _settings(model_dir, grpc_port=9000, rest_port=9001, work_dir=tmp_path / "work")
    command = launch_tfserving.binary_command(settings, binary="/opt/bin/tensorflow_model_server")
    assert command[0] == "/opt/bin/tensorflow_model_server"
    flags = _flags(command[1:])
    assert set(flags) <= TF_SERVING_FLAGS
    assert (flags["port"], flags["rest_api_port"]) == ("9000", "9001")
    assert Path(flags["batching_parameters_file"]) == SERVING / "batching.config"
    assert Path(flags["monitoring_config_file"]) == SERVING / "monitoring.config"
    host_config = Path(flags["model_config_file"])
    assert host_config.parent == tmp_path / "work"
    [model] = config_files.read_model_server_config(host_config).model_config_list.config
    assert model.base_path == str(model_dir)
    # Everything else in the model's config is kept.
    [original] = config_files.read_model_server_config(
        SERVING / "models.config"
    ).model_config_list.config
    original.base_path = str(model_dir)
    assert model == original


def test_docker_and_binary_modes_pass_the_same_flag_names(model_dir: Path, tmp_path: Path) -> None:
    settings = _settings(model_dir, work_dir=tmp_path)
    _, docker_args = _docker_parts(launch_tfserving.docker_command(settings))
    binary_args = launch_tfserving.binary_command(settings)[1:]
    assert list(_flags(docker_args)) == list(_flags(binary_args))


def test_rebase_refuses_a_base_path_that_would_not_be_mounted() -> None:
    text = 'model_config_list { config { name: "other" base_path: "/models/other" } }'
    with pytest.raises(launch_tfserving.LaunchError, match="/models/other is not mounted"):
        launch_tfserving.rebase_model_config(text, {"/models/xception": "/srv/xception"})


def test_base_paths_in_comments_are_ignored() -> None:
    text = '# base_path: "/elsewhere"\nmodel_config_list { config {\n base_path: "/models/x"\n} }\n'
    assert launch_tfserving.model_base_paths(text) == ["/models/x"]


def test_model_check_rejects_a_missing_base_path(tmp_path: Path) -> None:
    with pytest.raises(launch_tfserving.LaunchError, match="make export"):
        launch_tfserving.check_model_dir(tmp_path / "absent")


def test_model_check_rejects_a_base_path_without_numeric_versions(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()  # TF Serving ignores non-numeric names and would wait forever
    with pytest.raises(launch_tfserving.LaunchError, match="no numeric version directory"):
        launch_tfserving.check_model_dir(tmp_path)


def _fake_program(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_mode_auto_prefers_a_reachable_docker_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docker = _fake_program(tmp_path, "docker", 'echo "28.2.2"')
    _fake_program(tmp_path, "tensorflow_model_server", "exit 0")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert launch_tfserving.choose_mode("auto") == ("docker", str(docker))


def test_mode_auto_uses_the_binary_when_the_docker_cli_has_no_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_program(tmp_path, "docker", 'echo "Cannot connect to the Docker daemon" >&2; exit 1')
    binary = _fake_program(tmp_path, "tensorflow_model_server", "exit 0")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert launch_tfserving.choose_mode("auto") == ("binary", str(binary))


@pytest.mark.parametrize("requested", ["auto", "docker", "binary"])
def test_mode_fails_with_one_line_naming_the_local_server_when_nothing_can_run(
    requested: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(launch_tfserving.LaunchError) as caught:
        launch_tfserving.choose_mode(requested)
    message = str(caught.value)
    assert "\n" not in message
    assert "make serve" in message


def test_rebase_rewrites_a_base_path_anywhere_on_a_line_and_quotes_it() -> None:
    text = 'model_config_list { config { name: "x" base_path: "/models/x" } }'
    rebased = launch_tfserving.rebase_model_config(text, {"/models/x": '/srv/odd "dir"'})
    [model] = config_files.parse_text_proto(
        rebased, config_files.ModelServerConfig
    ).model_config_list.config
    assert (model.name, model.base_path) == ("x", '/srv/odd "dir"')


def test_operators_guide_shows_the_command_the_launcher_builds(model_dir: Path) -> None:
    guide = (SERVING / "README.md").read_text()
    command = _default_docker_command(model_dir)
    for part in command[1:]:
        shown = part.replace(str(model_dir), "$PWD/models/xception").replace(
            str(SERVING), "$PWD/serving"
        )
        assert shown in guide, f"serving/README.md does not show {shown}"
