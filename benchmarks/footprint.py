"""Client footprint: installed size of a client-only environment and import time.

Installed size is measured two ways:

- ``venv``: ``python -m venv`` in a temporary directory, ``pip install .`` (the client; its
  dependencies from the package index), ``du`` of the whole environment minus the bare venv (pip
  itself). Slow and needs the index, so it runs in the background while the models load
  (``VenvBuild``) and its result is cached in the build directory, keyed by the pyproject.toml
  file.
- ``records``: the sum of the files each installed distribution lists in its RECORD, over the
  dependency closure of the base install and of ``tensorflow-serving-api`` in this venv. Fast,
  offline, and the comparison the import-time figure needs (what ``tensorflow_serving.apis``
  drags in: TensorFlow).

Import time: a fresh interpreter per sample, timing only the import statement (wall and CPU of
the child), best of N.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from xception_contract import extras

IMPORT_PROBE = """
import resource, time
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
c0, t0 = cpu(), time.perf_counter()
import {module}
print(time.perf_counter() - t0, cpu() - c0)
"""


def import_time(
    module: str, *, repeats: int, python: str = sys.executable, timeout: float = 120.0
) -> dict[str, Any]:
    """Best-of-``repeats`` wall and CPU seconds of ``import module`` in fresh interpreters."""
    walls: list[float] = []
    cpus: list[float] = []
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for _ in range(repeats):
        out = subprocess.run(
            [python, "-c", IMPORT_PROBE.format(module=module)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=True,
        )
        wall, cpu = (float(v) for v in out.stdout.split()[-2:])
        walls.append(wall)
        cpus.append(cpu)
    return {
        "module": module,
        "best_wall_s": min(walls),
        "best_cpu_s": min(cpus),
        "samples_wall_s": walls,
        "samples_cpu_s": cpus,
    }


def _requirement_names(dist: metadata.Distribution) -> list[str]:
    names = []
    for req in dist.requires or []:
        if ";" in req and "extra" in req.split(";", 1)[1]:
            continue  # optional extras are not installed by a plain `pip install`
        match = re.match(r"[A-Za-z0-9._-]+", req.strip())
        if match:
            names.append(match.group(0))
    return names


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_closure(root: str) -> list[str]:
    """Installed distributions ``root`` needs, itself included (canonical names, sorted)."""
    seen: set[str] = set()
    stack = [root]
    while stack:
        name = _canonical(stack.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        stack.extend(_requirement_names(dist))
    return sorted(seen)


def installed_bytes(names: list[str]) -> int:
    total = 0
    for name in names:
        dist = metadata.distribution(name)
        for file in dist.files or []:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                total += path.stat().st_size
    return total


def records_size(root: str, *, exclude_root: bool = False) -> dict[str, Any]:
    names = dependency_closure(root)
    if exclude_root:
        names = [n for n in names if n != _canonical(root)]
    return {"distributions": names, "bytes": installed_bytes(names)}


def du_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                total += os.stat(full).st_size
    return total


def client_venv_size(repo: Path, cache_file: Path, *, timeout: float = 240.0) -> dict[str, Any]:
    """Build (or read the cached result of) a client-only venv; sizes in bytes."""
    repo = repo.resolve()
    pyproject = (repo / "pyproject.toml").read_bytes()  # the base install is the client
    key = hashlib.sha256(pyproject + sys.version.encode()).hexdigest()[:16]
    if cache_file.is_file():
        cached = json.loads(cache_file.read_text())
        if cached.get("key") == key:
            return {**cached, "cached": True}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-client-venv-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=timeout)
        bare = du_bytes(venv)
        # A non-editable install: what a user of the client gets.
        install = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                str(repo),
            ],
            timeout=timeout,
            capture_output=True,
            text=True,
        )
        if install.returncode != 0:
            raise RuntimeError(
                f"pip install . (the client) failed: {install.stderr.strip()[-500:]}"
            )
        full = du_bytes(venv)
        freeze = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "freeze"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.splitlines()
    result = {
        "key": key,
        "venv_bytes": full,
        "bare_venv_bytes": bare,
        "client_install_bytes": full - bare,
        "packages": freeze,
        "build_seconds": time.monotonic() - started,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps(result, indent=2))
    return {**result, "cached": False}


class VenvBuild:
    """``client_venv_size`` in a background thread; ``result`` says what it gave (or why not)."""

    def __init__(self, repo: Path, cache_file: Path) -> None:
        self._result: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, args=(repo, cache_file), daemon=True)
        self._thread.start()

    def _run(self, repo: Path, cache_file: Path) -> None:
        try:
            self._result.update(client_venv_size(repo, cache_file))
        except Exception as error:  # offline or no index: the footprint falls back to RECORD sizes
            self._result["error"] = f"{type(error).__name__}: {error}"[:300]

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the build (measurements wait for it: it uses CPU)."""
        self._thread.join(timeout)

    def result(self) -> dict[str, Any]:
        """What the build gave: its sizes, or its error; empty while it still runs."""
        return dict(self._result)


def measure(import_repeats: int, venv_result: Mapping[str, Any]) -> dict[str, Any]:
    """The results' ``footprint`` object: import times in fresh interpreters, installed sizes
    (the client-only venv's when ``venv_result`` has it, else RECORD sums)."""
    ours = import_time("xception_client", repeats=import_repeats)
    tfs = import_time("tensorflow_serving.apis.predict_pb2", repeats=import_repeats)
    client_records = records_size(extras.DISTRIBUTION)  # its base install is the client
    tfs_records = records_size("tensorflow-serving-api")
    installed: dict[str, Any] = {
        "client_records_bytes": client_records["bytes"],
        "client_distributions": client_records["distributions"],
        "tfs_api_bytes": tfs_records["bytes"],
        "tfs_api_distributions": len(tfs_records["distributions"]),
    }
    if "client_install_bytes" in venv_result:
        cached = f" (cached {venv_result.get('measured', '')})" if venv_result.get("cached") else ""
        installed.update(
            client_bytes=venv_result["client_install_bytes"],
            client_method="client-only venv: du after `pip install .` (the client) minus the "
            "bare venv" + cached,
            client_venv_total_bytes=venv_result["venv_bytes"],
        )
    else:
        failed = f" (venv build failed: {venv_result['error']})" if "error" in venv_result else ""
        installed.update(
            client_bytes=client_records["bytes"],
            client_method="RECORD sizes of its dependency closure in .venv" + failed,
        )
    return {
        "import": {
            "repeats": import_repeats,
            "xception_client_s": ours["best_wall_s"],
            "tfs_api_s": tfs["best_wall_s"],
            "xception_client_cpu_s": ours["best_cpu_s"],
            "tfs_api_cpu_s": tfs["best_cpu_s"],
            "samples": {
                "xception_client": ours["samples_wall_s"],
                "tfs_api": tfs["samples_wall_s"],
            },
        },
        "installed": installed,
    }
