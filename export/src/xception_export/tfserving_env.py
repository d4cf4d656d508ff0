"""Run the preflight under another TF Serving release's TensorFlow, in a venv built on demand.

A TF Serving release X.Y.Z is built on TensorFlow X.Y.Z (the ``tensorflow/serving:X.Y.Z`` images
embed that runtime), and ``tensorflow==X.Y.Z`` from PyPI runs the same C++ graph runtime and op
registry. An artifact written by a newer TensorFlow can carry op attributes an older runtime
rejects at import ("NodeDef mentions attr ... not in Op"), so the check has to run under the
served release's TensorFlow, not ours.

The venv lives in ``$XDG_CACHE_HOME/xception-bundle/tfserving-X.Y.Z`` (default ``~/.cache``),
built once under a lock and marked complete only after pip succeeded.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from xception_export import preflight
from xception_export.errors import ExportError, UsageError

_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_COMPLETE = ".complete"
PREFLIGHT_TIMEOUT_S = 900.0


def tensorflow_version_for(tfserving_version: str) -> str:
    """The TensorFlow inside ``tensorflow/serving:<tfserving_version>``."""
    if not _VERSION.match(tfserving_version):
        raise UsageError(
            "--tfserving-version must be a release number like 2.20.0. "
            f"Received: --tfserving-version={tfserving_version}"
        )
    return tfserving_version


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xception-bundle"


def env_dir(tfserving_version: str) -> Path:
    return cache_root() / f"tfserving-{tfserving_version}"


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_env(tfserving_version: str, log: Callable[[str], None]) -> Path:
    """The Python of a venv holding TF Serving ``tfserving_version``'s TensorFlow.

    Raises ExportError with one line when pip cannot install it.
    """
    tensorflow = tensorflow_version_for(tfserving_version)
    venv = env_dir(tfserving_version)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others reuse its venv
        if (venv / _COMPLETE).exists():
            return _python(venv)
        shutil.rmtree(venv, ignore_errors=True)
        log(
            f"building a venv with TensorFlow {tensorflow} (TF Serving {tfserving_version}) in "
            f"{venv}; this happens once"
        )
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # tensorflow-serving-api is released in lockstep and carries the PredictionLog proto
        # the warmup file is made of.
        packages = [f"tensorflow=={tensorflow}", f"tensorflow-serving-api=={tfserving_version}"]
        result = subprocess.run(
            [
                str(_python(venv)),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *packages,
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            errors = [ln for ln in result.stderr.splitlines() if ln.startswith("ERROR")]
            reason = errors[-1] if errors else (result.stderr.strip().splitlines() or ["?"])[-1]
            raise ExportError(
                f"cannot install TensorFlow {tensorflow} for TF Serving {tfserving_version} "
                f"(pip install {' '.join(packages)}): {reason}"
            )
        (venv / _COMPLETE).write_text(" ".join(packages) + "\n")
    return _python(venv)


def run_preflight(python: Path, version_dir: Path, tags: str) -> preflight.PreflightReport:
    """Run preflight.py by path under ``python`` and read its JSON report."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    env.pop("PYTHONPATH", None)  # nothing of ours may leak into the other TensorFlow
    command = [str(python), "-I", preflight.__file__, str(version_dir), "--tags", tags, "--json"]
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=PREFLIGHT_TIMEOUT_S
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ExportError(f"the preflight under {python} failed (exit {result.returncode}): {tail}")
    return preflight.PreflightReport.from_json(json.loads(lines[-1]))
