"""Package one exported version for the managed TF Serving hosts (``xception-export package``).

- SageMaker (AWS's TF Serving container): a ``model.tar.gz`` holding numeric version folders,
  optionally under a model-name folder. We write ``<model_name>/<version>/...`` by default: the
  container then serves the model under that name (the one every other stack here uses, so
  clients and the ``tfs-model-name`` custom attribute stay the same), and a second model can be
  added beside it later. ``flat=True`` writes ``<version>/...`` at the root instead.
- Vertex AI (prebuilt TensorFlow prediction containers, TF Serving inside): a folder with
  ``saved_model.pb`` at its root (no version folder), the ``serve`` tag and a ``serving_default``
  signature. Online prediction caps a request at 1.5 MB, so ``oversized_requests`` measures the
  REST body ``{"instances": [{"b64": ...}]}`` each example image would make.

Both copy the version as it is (variables, assets, and assets.extra/ with the warmup records that
TF Serving replays before serving), and both are written atomically: built beside the output,
then renamed into place.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import xception_contract as contract
from xception_contract import layout

from xception_export import artifact
from xception_export.errors import ExportError, UsageError

TARGETS: Final = ("sagemaker", "vertex")
SERVE_TAG: Final = "serve"
DEFAULT_SIGNATURE: Final = "serving_default"
# Vertex AI public endpoints: 1.5 MB per online prediction request (gcloud ai endpoints predict
# reference). Counted as 1,500,000 bytes, the stricter reading of "MB".
VERTEX_ONLINE_LIMIT_BYTES: Final = 1_500_000


@dataclass(frozen=True)
class OversizedRequest:
    path: Path
    request_bytes: int


def check_version_dir(version_dir: Path) -> None:
    """A numeric version folder holding a SavedModel, or UsageError naming what is missing."""
    if not version_dir.is_dir():
        raise UsageError(f"VERSION_DIR {version_dir} is not a directory")
    if layout.parse_version(version_dir.name) is None:
        raise UsageError(
            f"VERSION_DIR must be a numeric version folder such as models/xception/1 "
            f"(TF Serving loads only numeric versions). Received: {version_dir}"
        )
    for required in ("saved_model.pb", "variables"):
        if not (version_dir / required).exists():
            raise UsageError(f"VERSION_DIR {version_dir} has no {required}: not a SavedModel")


def check_serving_signature(version_dir: Path) -> None:
    """Vertex AI's container serves the ``serve`` MetaGraphDef's ``serving_default`` signature."""
    saved = artifact.read_saved_model(version_dir)
    serve = [m for m in saved.meta_graphs if SERVE_TAG in m.meta_info_def.tags]
    if not serve:
        raise ExportError(f"{version_dir} has no MetaGraphDef tagged '{SERVE_TAG}'")
    if DEFAULT_SIGNATURE not in serve[0].signature_def:
        raise ExportError(
            f"{version_dir}: the '{SERVE_TAG}' graph has no '{DEFAULT_SIGNATURE}' signature "
            f"(has: {', '.join(sorted(serve[0].signature_def))})"
        )


def sagemaker_members(version: str, model_name: str | None) -> str:
    """The folder a version goes to inside model.tar.gz."""
    return version if model_name is None else f"{model_name}/{version}"


def package_sagemaker(
    version_dir: Path,
    output: Path,
    *,
    model_name: str | None = contract.DEFAULT_MODEL_NAME,
    force: bool = False,
) -> Path:
    """Write ``output`` (a .tar.gz) with the version under ``<model_name>/<version>/``."""
    check_version_dir(version_dir)
    if model_name is not None and (not model_name or "/" in model_name or model_name[0] == "."):
        raise UsageError(f"--model-name must be a plain folder name. Received: {model_name!r}")
    _refuse_existing(output, force)
    prefix = sagemaker_members(version_dir.name, model_name)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            # Sorted, and owner-neutral: the same version packs to the same members.
            if model_name is not None:
                tar.add(version_dir, arcname=model_name, recursive=False, filter=_neutral)
            tar.add(version_dir, arcname=prefix, recursive=False, filter=_neutral)
            for path in sorted(version_dir.rglob("*")):
                arcname = f"{prefix}/{path.relative_to(version_dir).as_posix()}"
                tar.add(path, arcname=arcname, recursive=False, filter=_neutral)
        _fsync(tmp)
        tmp.replace(output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return output


def package_vertex(version_dir: Path, output: Path, *, force: bool = False) -> Path:
    """Write the folder ``output`` with the version's contents at its root."""
    check_version_dir(version_dir)
    check_serving_signature(version_dir)
    _refuse_existing(output, force)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        shutil.copytree(version_dir, tmp, dirs_exist_ok=True)
        if output.exists():
            shutil.rmtree(output)
        tmp.replace(output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output


def rest_request_bytes(image: bytes) -> int:
    """Size of the REST body Vertex AI (and TF Serving's REST API) takes for one image."""
    body = {"instances": [{"b64": base64.b64encode(image).decode("ascii")}]}
    return len(json.dumps(body, separators=(",", ":")).encode())


def oversized_requests(
    images: Iterable[Path], limit: int = VERTEX_ONLINE_LIMIT_BYTES
) -> list[OversizedRequest]:
    """The images whose one-image request would exceed Vertex AI's online limit."""
    found = []
    for path in images:
        size = rest_request_bytes(path.read_bytes())
        if size > limit:
            found.append(OversizedRequest(path, size))
    return found


class _Int64Value(Protocol):
    @property
    def value(self) -> int: ...


class BatchingParameters(Protocol):
    """The fields of TF Serving's BatchingParameters message that SageMaker can set."""

    @property
    def max_batch_size(self) -> _Int64Value: ...
    @property
    def batch_timeout_micros(self) -> _Int64Value: ...
    @property
    def num_batch_threads(self) -> _Int64Value: ...
    @property
    def max_enqueued_batches(self) -> _Int64Value: ...
    @property
    def allowed_batch_sizes(self) -> Iterable[int]: ...
    @property
    def pad_variable_length_inputs(self) -> bool: ...


# BatchingParameters field -> the environment variable AWS's TF Serving container writes it from.
SAGEMAKER_BATCHING_ENV: Final[Mapping[str, str]] = {
    "max_batch_size": "SAGEMAKER_TFS_MAX_BATCH_SIZE",
    "batch_timeout_micros": "SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS",
    "num_batch_threads": "SAGEMAKER_TFS_NUM_BATCH_THREADS",
    "max_enqueued_batches": "SAGEMAKER_TFS_MAX_ENQUEUED_BATCHES",
}


def sagemaker_batching_env(params: BatchingParameters) -> tuple[dict[str, str], list[str]]:
    """The SageMaker endpoint environment for a batching config, and the settings it cannot
    carry (the container has no variable for them, so they fall back to TF Serving's defaults)."""
    env = {"SAGEMAKER_TFS_ENABLE_BATCHING": "true"}
    for field, name in SAGEMAKER_BATCHING_ENV.items():
        env[name] = str(getattr(params, field).value)
    unmapped = []
    if list(params.allowed_batch_sizes):
        sizes = ",".join(str(s) for s in params.allowed_batch_sizes)
        unmapped.append(f"allowed_batch_sizes {sizes}")
    if params.pad_variable_length_inputs:
        unmapped.append("pad_variable_length_inputs true")
    return env, unmapped


def _neutral(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644  # readable by the container's serving user
    return info


def _refuse_existing(output: Path, force: bool) -> None:
    if output.exists() and not force:
        raise UsageError(f"{output} exists; pass --force to replace it")


def _fsync(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())
