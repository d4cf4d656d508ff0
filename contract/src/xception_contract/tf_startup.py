"""Import TensorFlow without its C++ start-up lines, unless TF_CPP_MIN_LOG_LEVEL asks for them.

What TensorFlow 2.21 prints on a CPU machine, and what hides each line:

- `WARNING: All log messages before absl::InitializeLog() is called are written to STDERR`,
  then `I... port.cc] oneDNN custom operations are on ...` and `I... cudart_stub.cc] Could not
  find cuda drivers ...` (twice: two shared libraries, each with its own absl). absl writes them
  from static initialisers while `import tensorflow` loads the libraries, before TF reads
  TF_CPP_MIN_LOG_LEVEL: no level (0-3), no ABSL_*/GLOG_*/GRPC_VERBOSITY variable and no
  CUDA_VISIBLE_DEVICES value hides them. Only what holds file descriptor 2 during the import does.
- `E... cuda_platform.cc] failed call to cuInit: ... (303)` when the first op or device listing
  initialises the CUDA platform. TF_CPP_MIN_LOG_LEVEL=3 hides it (and every other C++ error);
  CUDA_VISIBLE_DEVICES="" does not.

So `install` puts a hook on the first `import tensorflow`: it holds fd 2 in a temporary file
while TensorFlow loads and lists its physical devices (which is when cuInit runs), then writes
back every captured line except those TF_CPP_MIN_LOG_LEVEL says TF would not print: INFO from 1,
WARNING from 2, ERROR from 3. The cuInit error is dropped at 2 only when the same capture says no
CUDA driver is installed (a CPU machine); on a host with a driver, a failing cuInit is a real
problem and stays. Anything else (Python warnings, other errors) is written back unchanged.

Both TensorFlow-side console scripts call it: ``xception-export`` and ``xception-serve``.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
import types
from collections.abc import Iterator, Mapping, Sequence
from importlib.machinery import ModuleSpec

LEVEL_VAR = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LEVEL = "2"  # TF's "hide INFO and WARNING": C++ errors still print

_ABSL_BANNER = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
)
# absl's prefix: severity letter, MMDD, time, thread id, file:line]
_ABSL_LINE = re.compile(r"([IWEF])\d{4} [\d:.]+\s+\d+ [\w.\-]+:\d+\] ")
_NO_DRIVER = "Could not find cuda drivers on your machine"
_CUINIT = "failed call to cuInit"
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}


def min_log_level(environ: Mapping[str, str] | None = None) -> int:
    """TF_CPP_MIN_LOG_LEVEL as TF reads it: a number, anything else (or unset) is 0."""
    value = (os.environ if environ is None else environ).get(LEVEL_VAR, "").strip()
    return int(value) if value.isdigit() else 0


def startup_filter(text: str, level: int) -> str:
    """`text` without the start-up lines TensorFlow would not print at `level`."""
    no_driver = _NO_DRIVER in text
    kept: list[str] = []
    for line in text.splitlines(keepends=True):
        if level >= 1 and line.rstrip("\r\n") == _ABSL_BANNER:
            continue
        match = _ABSL_LINE.match(line)
        if match:
            severity = _SEVERITY[match.group(1)]
            if severity < 3 and level > severity:
                continue
            if severity == 2 and level >= 2 and no_driver and _CUINIT in line:
                continue
        kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def _filtered_stderr(level: int) -> Iterator[None]:
    """Hold file descriptor 2 in a temporary file; write back what `startup_filter` keeps."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            rest = startup_filter(capture.read().decode("utf-8", "replace"), level)
            if rest:
                sys.stderr.write(rest)
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader of `tensorflow` (and its device listing) under `_filtered_stderr`."""

    def __init__(self, loader: importlib.abc.Loader, level: int) -> None:
        self._loader = loader
        self._level = level

    def create_module(self, spec: ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        # The module keeps its real loader: nothing of this hook is visible after the import.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        with _filtered_stderr(self._level):
            self._loader.exec_module(module)
            module.config.list_physical_devices()  # CUDA's cuInit runs (and logs) here


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Meta-path hook for the first `import tensorflow` (or of any tensorflow.* module)."""

    def __init__(self, level: int) -> None:
        self._level = level

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # one import only; the real finders find the package
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self._level)
        return spec


def install() -> None:
    """Filter TensorFlow's start-up lines whenever this process first imports TensorFlow.

    TF_CPP_MIN_LOG_LEVEL defaults to 2 here. An explicit 0 leaves TensorFlow's output untouched,
    and so does a process that already imported TensorFlow. Nothing is imported until then, so
    commands that fail before needing TensorFlow stay fast.
    """
    os.environ.setdefault(LEVEL_VAR, DEFAULT_LEVEL)
    level = min_log_level()
    if level == 0 or "tensorflow" in sys.modules:
        return
    if not any(isinstance(finder, _QuietFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder(level))
