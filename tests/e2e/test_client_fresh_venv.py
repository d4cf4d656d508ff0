"""`pip install ./contract ./client` into a fresh venv: no TensorFlow, and it predicts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_client_installs_alone_without_tensorflow_and_predicts(
    xception_server: Any, small_xception_model: Any, tmp_path: Path
) -> None:
    # Build from a copy so setuptools' build/ and egg-info never land in the work tree.
    sources = []
    for part in ("contract", "client"):  # the client and the one package it needs from here
        sources.append(str(tmp_path / part))
        shutil.copytree(REPO / part, tmp_path / part,
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    install = subprocess.run(
        # At the floor of the client's protobuf range: the generated code must load there too.
        [str(python), "-m", "pip", "install", "--quiet", *sources, "protobuf==6.31.1"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert install.returncode == 0, (
        "pip install ./contract ./client failed (it needs the package registry or a warm pip "
        "cache):\n"
        + install.stdout[-2000:] + install.stderr[-2000:]
    )

    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"],
        capture_output=True, text=True, check=True, timeout=120, env=env,
    ).stdout.lower()
    names = {line.split("==")[0] for line in installed.splitlines()}
    assert {"xception-client", "xception-contract"} <= names
    assert "protobuf==6.31.1" in installed.splitlines()
    assert not names & {"tensorflow", "tensorflow-cpu", "tensorflow-serving-api", "keras"}, names

    probe = subprocess.run(
        [str(python), "-c", "import importlib.util as u, sys;"
         "sys.exit(1 if u.find_spec('tensorflow') or u.find_spec('tensorflow_serving') else 0)"],
        timeout=60, env=env,
    )
    assert probe.returncode == 0, "tensorflow is importable in the client-only venv"

    image = tmp_path / "picture.jpg"
    pixels = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image, quality=90)
    result = subprocess.run(
        [str(venv / "bin" / "xception-client"), "predict", str(image), "--json",
         "--server", xception_server.grpc_target],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert '"predictions"' in result.stdout

    # The library itself, in that venv, with no TensorFlow module loaded at any point.
    code = (
        "import sys, xception_client as x\n"
        f"with x.Client({xception_server.grpc_target!r}) as c:\n"
        f"    p = c.predict({str(image)!r})\n"
        "assert len(p) == 5 and p[0].score >= p[-1].score, p\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'tensorflow_serving')]\n"
    )
    library = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                             timeout=120, env=env, cwd=tmp_path)
    assert library.returncode == 0, library.stderr

    # verify reads the artifact (TFRecord, CRC32C, saved_model.pb) with the client alone too.
    verify = subprocess.run(
        [str(venv / "bin" / "xception-client"), "verify", str(small_xception_model.base_path),
         "--server", xception_server.grpc_target],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.splitlines()[-1].startswith("PASS: "), verify.stdout
