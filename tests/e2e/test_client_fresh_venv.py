"""The client installs alone with one pip command, in each form a user would try, and predicts.

The forms: a path to a clone (`pip install .`), a git URL (`pip install git+file://...`, as a
requirements line in the user's service would say it) and the wheel `make dist` builds. Each goes
into a fresh venv, pulls no TensorFlow, and needs no name that exists only in this repository. The
three cover both protobuf majors the client supports: the floor of its range (6.31.1), Beam's
world (<7) and the newest release pip picks (7.x).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SERVER_SIDE = {
    "tensorflow",
    "tensorflow-cpu",
    "tensorflow-serving-api",
    "keras",
    "tf-keras",
    "apache-beam",
    "waitress",
    "fastapi",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `make dist` builds from this checkout."""
    done = subprocess.run(["make", "dist"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = (REPO / "dist").glob("xception_serving_bundle-*-py3-none-any.whl")
    return built


def _requirement(form: str, tmp_path: Path, wheel: Path) -> str:
    if form == "path":
        return str(REPO)
    if form == "wheel":
        return str(wheel)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    return f"git+file://{clone}"


@dataclass(frozen=True)
class Venv:
    """A fresh venv under `root`, and the environment its commands run in (no PYTHONPATH, so
    nothing from this checkout's environment leaks in)."""

    root: Path
    cwd: Path
    env: dict[str, str]

    @classmethod
    def create(cls, root: Path, cwd: Path) -> Venv:
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        env.pop("PYTHONPATH", None)
        return cls(root, cwd, env)

    def run(
        self, command: str, *args: str, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """One of the venv's own commands (python, pip's console scripts, ours)."""
        return subprocess.run(
            [str(self.root / "bin" / command), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            cwd=self.cwd,
        )


def _install(venv: Venv, requirement: str, protobuf: str) -> None:
    install = venv.run(
        "python", "-m", "pip", "install", "--quiet", requirement, protobuf, timeout=600
    )
    assert install.returncode == 0, (
        f"pip install {requirement} failed (it needs the package registry or a warm pip cache):\n"
        + install.stdout[-2000:]
        + install.stderr[-2000:]
    )


def _assert_client_alone_is_installed(venv: Venv, form: str) -> None:
    """The bundle, no server-side package, the protobuf major the form asked for, and a
    consistent environment (pip check)."""
    freeze = venv.run("python", "-m", "pip", "list", "--format=freeze")
    installed = dict(line.lower().split("==", 1) for line in freeze.stdout.splitlines())
    assert "xception-serving-bundle" in installed
    assert not SERVER_SIDE & set(installed), installed
    protobuf_major = int(installed["protobuf"].split(".")[0])
    expected_major = {"path": 6, "git": 7, "wheel": 6}[form]
    assert protobuf_major == expected_major, installed["protobuf"]
    if form == "path":
        assert installed["protobuf"] == "6.31.1"
    assert venv.run("python", "-m", "pip", "check").returncode == 0


def _write_jpeg(path: Path) -> Path:
    pixels = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return path


def _assert_command_predicts(venv: Venv, image: Path, target: str) -> None:
    result = venv.run("xception-client", "predict", str(image), "--json", "--server", target)
    assert result.returncode == 0, result.stderr
    assert '"predictions"' in result.stdout


def _assert_library_predicts_without_tensorflow(venv: Venv, image: Path, target: str) -> None:
    """The library itself, with no TensorFlow module loaded at any point."""
    code = (
        "import sys, xception_client as x\n"
        f"with x.Client({target!r}) as c:\n"
        f"    p = c.predict({str(image)!r})\n"
        "assert len(p) == 5 and p[0].score >= p[-1].score, p\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'tensorflow_serving')]\n"
    )
    library = venv.run("python", "-c", code)
    assert library.returncode == 0, library.stderr


def _assert_verify_passes(venv: Venv, base_path: Path, target: str) -> None:
    """verify reads the artifact (TFRecord, CRC32C, saved_model.pb) with the client alone too."""
    verify = venv.run("xception-client", "verify", str(base_path), "--server", target)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "PASS: " in verify.stdout.splitlines()[-1], verify.stdout


def _assert_missing_extra_names_its_install(venv: Venv) -> None:
    """A part whose extra is missing says which install fixes it, instead of a bare ImportError."""
    missing = venv.run("xception-serve", "--help")
    assert missing.returncode != 0
    assert "xception-serving-bundle[serve]" in missing.stderr, missing.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("form", "protobuf"),
    [("path", "protobuf==6.31.1"), ("git", "protobuf>=7"), ("wheel", "protobuf<7")],
)
def test_client_installs_alone_with_one_pip_command_without_tensorflow_and_predicts(
    form: str,
    protobuf: str,
    wheel: Path,
    xception_server: Any,
    small_xception_model: Any,
    tmp_path: Path,
) -> None:
    venv = Venv.create(tmp_path / "venv", cwd=tmp_path)
    _install(venv, _requirement(form, tmp_path, wheel), protobuf)
    _assert_client_alone_is_installed(venv, form)
    image = _write_jpeg(tmp_path / "picture.jpg")
    target = xception_server.grpc_target
    _assert_command_predicts(venv, image, target)
    _assert_library_predicts_without_tensorflow(venv, image, target)
    _assert_verify_passes(venv, Path(small_xception_model.base_path), target)
    _assert_missing_extra_names_its_install(venv)
