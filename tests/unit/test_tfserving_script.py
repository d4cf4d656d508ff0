"""serving/run-tfserving.sh (what `make serve-tfserving` runs), as a subprocess with a PATH that
holds only what each case needs: no engine -> one clear line; a Docker engine or the binary -> it
prints the exact command and then runs exactly that."""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from xception_serving import launch_tfserving

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "serving" / "run-tfserving.sh"


def _repository_settings(model_dir: Path) -> launch_tfserving.ServeSettings:
    """The paths the script passes: the repository's serving/ and build/tfserving."""
    return launch_tfserving.ServeSettings(
        model_dir, config_dir=ROOT / "serving", work_dir=ROOT / "build" / "tfserving"
    )


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """A PATH directory with the shell tools the script uses, and no docker or TF Serving."""
    directory = tmp_path / "bin"
    directory.mkdir()
    for tool in ("bash", "dirname"):
        found = shutil.which(tool)
        assert found, tool
        (directory / tool).symlink_to(found)
    return directory


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    base = tmp_path / "models" / "xception"
    (base / "1").mkdir(parents=True)
    return base


def _fake(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _run(bin_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The script, run from outside the repository: it must find its own paths."""
    environment = {"PATH": str(bin_dir), "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=bin_dir.parent,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _fail_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_script_without_docker_or_binary_fails_with_one_line_naming_make_serve(
    bin_dir: Path, model_dir: Path
) -> None:
    assert shutil.which("docker", path=str(bin_dir)) is None
    line = _fail_line(_run(bin_dir, "--model-base-path", str(model_dir)))
    assert "cannot start TF Serving" in line
    assert "make serve" in line


def test_script_with_a_docker_cli_but_no_engine_fails_the_same_way(
    bin_dir: Path, model_dir: Path
) -> None:
    _fake(bin_dir, "docker", 'echo "Cannot connect to the Docker daemon" >&2; exit 1')
    line = _fail_line(_run(bin_dir, "--model-base-path", str(model_dir)))
    assert "`docker info` failed" in line
    assert "make serve" in line


def test_script_with_a_docker_engine_prints_and_runs_the_docker_command(
    bin_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "docker-args"
    docker = _fake(
        bin_dir,
        "docker",
        f'[ "$1" = info ] && {{ echo 28.2.2; exit 0; }}\nprintf "%s\\n" "$@" > {log}',
    )
    result = _run(bin_dir, "--model-base-path", str(model_dir))
    assert result.returncode == 0, result.stderr
    expected = launch_tfserving.docker_command(_repository_settings(model_dir), docker=str(docker))
    assert result.stdout.splitlines() == [shlex.join(expected)]
    # It ran exactly what it printed.
    assert [str(docker), *log.read_text().splitlines()] == expected


def test_script_with_only_the_binary_prints_and_runs_the_binary_command(
    bin_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "tfs-args"
    binary = _fake(bin_dir, "tensorflow_model_server", f'printf "%s\\n" "$@" > {log}')
    result = _run(
        bin_dir,
        *("--model-base-path", str(model_dir), "--work-dir", str(tmp_path / "work")),
        *("--", "--mixed_precision=bfloat16"),
    )
    assert result.returncode == 0, result.stderr
    [printed] = result.stdout.splitlines()
    ran = [str(binary), *log.read_text().splitlines()]
    assert shlex.split(printed) == ran
    assert ran[-1] == "--mixed_precision=bfloat16"
    assert f"--model_config_file={tmp_path / 'work' / 'models.config'}" in ran


def test_script_names_make_export_when_the_model_is_missing(bin_dir: Path, tmp_path: Path) -> None:
    line = _fail_line(_run(bin_dir, "--model-base-path", str(tmp_path / "nothing")))
    assert "make export" in line


def test_launcher_builds_the_same_command_on_a_bare_python_without_project_packages(
    model_dir: Path,
) -> None:
    # A GPU host with python3 and Docker only: no site-packages (-S), so neither grpc nor the
    # installed project packages; run-tfserving.sh then puts serving/src and contract/src (the
    # zero-dependency contract) on PYTHONPATH. Run from the repository root, the launcher's own
    # path defaults (relative to the current directory) name the same files the script passes.
    sources = f"{ROOT / 'serving' / 'src'}:{ROOT / 'contract' / 'src'}"
    result = subprocess.run(
        [
            *("/usr/bin/env", "-i", "PATH=/usr/bin:/bin", f"PYTHONPATH={sources}"),
            *(sys.executable, "-S", "-m", "xception_serving.launch_tfserving", "command"),
            *("--model-base-path", str(model_dir)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    script = (ROOT / "serving/run-tfserving.sh").read_text()
    assert 'PYTHONPATH="$here/src:$root/contract/src' in script
    expected = launch_tfserving.docker_command(_repository_settings(model_dir))
    assert result.stdout.splitlines() == [shlex.join(expected)]
