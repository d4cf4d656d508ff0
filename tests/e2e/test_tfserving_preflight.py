"""`xception-export check` and `xception-serve`'s Session flags, run as the real commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from xception_serving.testing.process import free_port

from tests.fixtures.models import ExportedModel
from tests.fixtures.session_models import write_keras_module_version

BIN = Path(sys.executable).parent


def run(tool: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [str(BIN / tool), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_check_prints_ok_for_every_signature_of_an_export_and_exits_zero(
    small_xception_model: ExportedModel,
) -> None:
    done = run("xception-export", "check", str(small_xception_model.base_path))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(
        f"checking {small_xception_model.version_dir} as TF Serving's Session path on this "
        "environment's TensorFlow "
    )
    assert "load (saver restore + init op): OK" in lines[1]
    for signature in ("classify", "serving_default", "serving_pixels", "serving_preprocessed"):
        row = next(line for line in lines if line.split()[:1] == [signature])
        assert row.rstrip().endswith("OK"), row
    assert lines[-1].startswith("OK: TF Serving's Session path on this environment's TensorFlow ")


def test_check_prints_tf_servings_error_and_exits_one_for_a_keras_attached_savedmodel(
    tmp_path: Path,
) -> None:
    version_dir = write_keras_module_version(tmp_path / "m", 1, attach_keras_object=True)
    done = run("xception-export", "check", str(version_dir))
    assert done.returncode == 1, done.stdout + done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("  serving_default"))
    assert "FAILED_PRECONDITION: Could not find variable" in row
    assert done.stdout.splitlines()[-1].startswith(
        "FAILED: warmup record 0 (predict_log, serving_default) fails"
    )


def test_check_under_a_release_that_cannot_be_installed_says_so_in_one_line(
    tmp_path: Path, small_xception_model: ExportedModel
) -> None:
    env_cache = tmp_path / "cache"
    done = subprocess.run(
        [
            str(BIN / "xception-export"),
            "check",
            str(small_xception_model.version_dir),
            "--tfserving-version",
            "0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "XDG_CACHE_HOME": str(env_cache)},
        check=False,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "xception-export check: error: cannot install TensorFlow 0.0.1 for TF Serving 0.0.1 "
        "(pip install tensorflow==0.0.1 tensorflow-serving-api==0.0.1): "
    ), last
    assert not (env_cache / "xception-bundle" / "tfserving-0.0.1").exists()


def test_check_refuses_a_malformed_release_number_as_a_usage_error(tmp_path: Path) -> None:
    done = run("xception-export", "check", str(tmp_path), "--tfserving-version", "latest")
    assert done.returncode == 2
    assert "--tfserving-version must be a release number like 2.20.0. Received: " in done.stderr


def test_serve_with_saved_model_tags_that_the_export_lacks_fails_startup_naming_the_tags(
    small_xception_model: ExportedModel,
) -> None:
    done = run(
        "xception-serve",
        f"--port={free_port()}",
        "--model_name=xception",
        f"--model_base_path={small_xception_model.base_path}",
        "--max_num_load_retries=0",
        "--saved_model_tags=serve,gpu",
    )
    assert done.returncode == 255
    assert "Could not find meta graph def matching supplied tags: { serve gpu }" in done.stderr


def test_serve_with_a_malformed_session_config_file_fails_startup_naming_it(
    tmp_path: Path,
) -> None:
    config = tmp_path / "session.config"
    config.write_text("gpu_options { allow_growth: maybe }\n")
    done = run(
        "xception-serve",
        f"--port={free_port()}",
        f"--model_base_path={tmp_path}",
        f"--tensorflow_session_config_file={config}",
    )
    assert done.returncode == 255
    assert "Failed to start server. Error: INVALID_ARGUMENT: Error parsing text-format " in (
        done.stderr
    )
    assert str(config) in done.stderr
