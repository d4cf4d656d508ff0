"""A quiet start: the console scripts print our lines, not TensorFlow's C++ start-up lines.

On a normal run `xception-export` and `xception-serve` (and `python -m xception_serving`) show no
absl/TensorFlow start-up line (the "before absl::InitializeLog()" banner, oneDNN, "Could not find
cuda drivers", cuInit); `--verbose` or an explicit TF_CPP_MIN_LOG_LEVEL=0 brings them back; a
real failure is still our one line.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from xception_contract import tf_startup

from tests.fixtures.commands import console_script, run_command

# absl's banner, or a line in absl/glog format: severity, MMDD, time, thread, file:line]
STARTUP_LINE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IWEF]\d{4} [\d:.]+\s+\d+ [\w.\-]+:\d+\] )",
    re.MULTILINE,
)


def environment(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != tf_startup.LEVEL_VAR}
    env.update(overrides)
    return env


def run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return run_command(command, timeout=300, env=environment(**env))


def startup_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if STARTUP_LINE.match(line)]


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One small export by the real script: its base path and the completed process."""
    base = tmp_path_factory.mktemp("quiet") / "m"
    done = run(
        [
            console_script("xception-export"),
            "--weights",
            "random",
            "--image-size",
            "71",
            "--model-base-path",
            str(base),
        ]
    )
    assert done.returncode == 0, done.stderr
    return base, done


def test_export_prints_only_our_lines(
    exported: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    base, done = exported
    assert startup_lines(done.stderr) == [], done.stderr
    assert "exported version 1 to" in done.stderr
    assert done.stdout.strip() == str(base / "1")


def test_export_verbose_brings_tensorflow_lines_back(
    exported: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    base, _ = exported
    done = run([console_script("xception-export"), "inspect", str(base), "--verbose"])
    assert done.returncode == 0, done.stderr
    assert startup_lines(done.stderr), done.stderr


def test_export_honours_an_explicit_tf_cpp_min_log_level_0(
    exported: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    base, _ = exported
    quiet = run([console_script("xception-export"), "inspect", str(base)])
    loud = run([console_script("xception-export"), "inspect", str(base)], TF_CPP_MIN_LOG_LEVEL="0")
    assert quiet.returncode == loud.returncode == 0, quiet.stderr + loud.stderr
    assert startup_lines(quiet.stderr) == [], quiet.stderr
    assert startup_lines(loud.stderr), loud.stderr


def test_serve_prints_only_our_lines(
    exported: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    base, _ = exported
    stdout_path, stderr_path = tmp_path / "stdout", tmp_path / "stderr"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            [
                console_script("xception-serve"),
                "--port=0",
                "--grpc_socket_path",
                str(tmp_path / "sock"),
                "--model_name=m",
                f"--model_base_path={base}",
            ],
            stdout=out,
            stderr=err,
            env=environment(),
        )
    try:
        deadline = time.monotonic() + 180
        while "xception-serve: ready" not in stdout_path.read_text():
            assert process.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, "not ready in 180 s"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = stderr_path.read_text()
    assert startup_lines(stderr) == [], stderr
    assert "Successfully loaded servable version {name: m version: 1}" in stderr
    assert "Server stopped" in stderr


def test_serve_honours_an_explicit_tf_cpp_min_log_level_0() -> None:
    quiet = run([sys.executable, "-m", "xception_serving", "--version"])
    loud = run([console_script("xception-serve"), "--version"], TF_CPP_MIN_LOG_LEVEL="0")
    assert quiet.returncode == loud.returncode == 0, quiet.stderr + loud.stderr
    assert "TensorFlow Library: " in quiet.stdout
    assert startup_lines(quiet.stderr) == [], quiet.stderr
    assert startup_lines(loud.stderr), loud.stderr


def test_a_real_failure_is_still_our_one_line(tmp_path: Path) -> None:
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"not a SavedModel")
    done = run(
        [
            console_script("xception-serve"),
            "--port=0",
            "--grpc_socket_path",
            str(tmp_path / "sock"),
            "--model_name=m",
            f"--model_base_path={tmp_path / 'm'}",
            "--max_num_load_retries=0",
        ]
    )
    assert done.returncode == 255
    assert startup_lines(done.stderr) == [], done.stderr
    failures = [line for line in done.stderr.splitlines() if "Failed to start server" in line]
    assert len(failures) == 1
    assert failures[0].startswith(
        "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available"
    )


NO_DRIVER = (
    "I0000 00:00:1796158665.307354    4435 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.\n"
)
CUINIT = (
    "E0000 00:00:1796158667.460573    4435 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n"
)
BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"


def test_filter_follows_tf_cpp_min_log_level() -> None:
    captured = BANNER + NO_DRIVER + CUINIT + "a Python warning\n"
    assert tf_startup.startup_filter(captured, 2) == "a Python warning\n"
    assert tf_startup.startup_filter(captured, 1) == CUINIT + "a Python warning\n"
    assert tf_startup.startup_filter(captured, 0) == captured


def test_filter_keeps_cuinit_failing_where_a_driver_is_installed() -> None:
    other_error = "E0000 00:00:1.5    7 foo.cc:1] something real\n"
    assert tf_startup.startup_filter(CUINIT + other_error, 2) == CUINIT + other_error
    assert tf_startup.startup_filter(CUINIT + other_error, 3) == ""
