"""The real ``xception-export`` console script (and ``python -m xception_export``) as subprocesses:
the default export (299x299, 1000 ImageNet classes, random weights) that `inspect` describes and
that answers one image, argument errors that echo the bad value and exit 2, and runtime failures
that are one line and exit 1 (the traceback only with --verbose)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xception_contract as contract

from tests.fixtures.commands import console_script, run_command
from tests.fixtures.images import image_bytes


def run(
    *args: str, timeout: float = 600, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """xception-export with `args`."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return run_command(
        [console_script("xception-export"), *args], timeout=timeout, cwd=cwd, env=env
    )


def test_default_size_random_export_then_inspect_and_one_inference(tmp_path: Path) -> None:
    import tensorflow as tf

    base = tmp_path / "models" / "xception"
    done = run("--weights", "random", "--model-base-path", str(base))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(base / "1")
    assert "WARNING: --weights random" in done.stderr

    shown = run("inspect", str(base / "1"))
    assert shown.returncode == 0, shown.stderr
    for text in (
        "signature_def['serving_default']",
        "inputs['image_bytes'] tensor_info:",
        "shape: (-1, 299, 299, 3)",
        f"Method name is: {contract.CLASSIFY_METHOD}",
        '"untrained": true',
    ):
        assert text in shown.stdout
    as_json = json.loads(run("inspect", "--json", str(base)).stdout)
    assert as_json["metadata"]["image_size"] == 299
    assert as_json["signatures"][contract.PIXELS_SIGNATURE]["inputs"][contract.PIXELS_INPUT][
        "shape"
    ] == [-1, 299, 299, 3]

    loaded = tf.saved_model.load(str(base / "1"))
    out = loaded.signatures[contract.BYTES_SIGNATURE](
        **{contract.IMAGE_BYTES_INPUT: tf.constant([image_bytes("jpeg_progressive", 480, 640)])}
    )
    probs = out[contract.PROBABILITIES_OUTPUT].numpy()
    assert probs.shape == (1, 1000)
    assert np.isclose(probs.sum(), 1.0, atol=1e-5)
    assert out[contract.TOP_K_KEYS_OUTPUT].shape == (1, 5)


@pytest.mark.parametrize(
    ("args", "echo"),
    [
        (["--top-k", "0"], "'0'"),
        (["--top-k", "1001", "--weights", "random"], "--top-k=1001"),
        (["--interpolation", "cubic"], "'cubic'"),
        (["--outputs", "scores"], "'scores'"),
        (["--weights", "no/such/weights.h5"], "--weights=no/such/weights.h5"),
        (["--model", "no/such/model.keras", "--labels", "l.txt"], "--model=no/such/model.keras"),
        (["--image-size", "64", "--weights", "random"], "--image-size=64"),
        (["--model-version", "-3"], "'-3'"),
        (["--labels", "l.txt"], "--labels=l.txt"),
    ],
)
def test_argument_errors_echo_the_bad_value_and_exit_2(
    tmp_path: Path, args: list[str], echo: str
) -> None:
    (tmp_path / "l.txt").write_text("a\nb\n")
    done = run(*args, "--model-base-path", str(tmp_path / "m"), timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    last = done.stderr.splitlines()[-1]  # argparse's usage line, then the error
    assert last.startswith("xception-export: error: ") and echo in last, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "m").exists()


def test_runtime_failure_is_one_line_and_exit_1(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"this is not a zip archive")
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    args = ["--model", str(broken), "--labels", str(labels), "--model-base-path", str(tmp_path)]
    done = run(*args, timeout=300)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if "xception-export: error:" in line]
    # Ours, then the loader's own reason (Keras's words).
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"xception-export: error: cannot load the model at {broken}: ")
    assert "Traceback" not in done.stderr


def test_verbose_shows_the_traceback_of_a_runtime_failure(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"\xff not a protobuf")
    quiet = run("inspect", str(tmp_path), timeout=300)
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    # Ours, naming the file, then protobuf's reason.
    assert quiet.stderr.splitlines()[-1].startswith(
        f"xception-export inspect: error: cannot read {tmp_path / '1' / 'saved_model.pb'}: "
    ), quiet.stderr
    verbose = run("inspect", "--verbose", str(tmp_path), timeout=300)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr


def test_inspect_of_a_missing_path_exits_2(tmp_path: Path) -> None:
    done = run("inspect", str(tmp_path / "nothing"), timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "xception-export inspect: error: PATH must be a SavedModel version directory or a model "
        f"base path. Received: PATH={tmp_path / 'nothing'}"
    )


def test_python_dash_m_runs_the_same_cli() -> None:
    done = run_command([sys.executable, "-m", "xception_export", "--help"], timeout=120)
    assert done.returncode == 0
    assert "--model-base-path" in done.stdout and "--interpolation" in done.stdout
