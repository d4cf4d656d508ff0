"""The export as a library call: ``export(...)`` does what ``xception-export`` does."""

from __future__ import annotations

import datetime as dt
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xception_contract as contract
from xception_contract import layout

from xception_export import artifact, normalization, preprocess, sources
from xception_export.errors import ExportError, UsageError
from xception_export.labels import Labels, LabelsError, imagenet_labels, load_labels

__all__ = ["ExportResult", "export", "export_keras_model"]


@dataclass(frozen=True)
class ExportResult:
    """Where a version was written and what it contains."""

    base_path: Path
    version: int
    version_dir: Path
    input_size: tuple[int, int]  # (height, width)
    num_classes: int
    top_k: int
    metadata: dict[str, Any]
    seconds: float

    @property
    def image_size(self) -> int:
        """The side of a square input (ValueError if the input is not square; see input_size)."""
        return sources.square_side(self.input_size)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _tool_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("xception-export")
    except PackageNotFoundError:
        return "unknown"


def export(
    model_base_path: str | Path,
    *,
    weights: str = "imagenet",
    model: str | Path | None = None,
    labels: str | Path | None = None,
    outputs: str = "auto",
    image_size: int | tuple[int, int] | None = None,
    preprocess_mode: str = "auto",
    interpolation: str = preprocess.DEFAULT_INTERPOLATION,
    top_k: int | None = None,
    max_pixels: int = contract.DEFAULT_MAX_PIXELS,
    limits: preprocess.DecodeLimits = preprocess.DEFAULT_LIMITS,
    model_version: int | None = None,
    force: bool = False,
    log: Callable[[str], None] = _stderr,
) -> ExportResult:
    """Export Keras Xception (``weights``) or a fine-tuned model (``model`` + ``labels``).

    ``image_size`` is a square side or (height, width); ``preprocess_mode`` is "auto" (told from
    the model's layers) or a ``preprocess_input`` mode, normalization.MODES.
    ``top_k`` defaults to 5, or the number of classes if smaller; ``limits`` bound the decode
    work the pixel count does not (--max-jpeg-scans, --max-gif-blocks, --max-png-text-chunks).
    Raises UsageError for bad argument values and ExportError for other failures.
    """
    _check_choices(outputs, preprocess_mode)
    if model is None:
        _check_xception_flags(labels, outputs, preprocess_mode)
        _check_common(interpolation, top_k, max_pixels, 1000, limits)
        source = sources.xception(weights, image_size or contract.DEFAULT_IMAGE_SIZE)
        label_set = imagenet_labels()
        if weights == "random":
            log(
                "WARNING: --weights random: untrained weights, predictions are meaningless "
                "(plumbing tests only); recorded in the export metadata"
            )
    else:
        if labels is None:
            raise UsageError(
                "--model needs --labels FILE (one label per class). Received: --labels=None"
            )
        _check_common(interpolation, top_k, max_pixels, None, limits)
        with _labels_flag(labels):
            label_set = load_labels(labels)
        source = sources.user_model(str(model), image_size, outputs, preprocess_mode)
    return export_keras_model(
        source,
        label_set,
        model_base_path,
        top_k=top_k,
        interpolation=interpolation,
        max_pixels=max_pixels,
        limits=limits,
        model_version=model_version,
        force=force,
        log=log,
    )


def _check_choices(outputs: str, preprocess_mode: str) -> None:
    """--outputs and --preprocess name one of their choices."""
    if outputs not in sources.OUTPUT_KINDS:
        raise UsageError(
            f"--outputs must be one of {', '.join(sources.OUTPUT_KINDS)}. "
            f"Received: --outputs={outputs}"
        )
    if preprocess_mode not in normalization.PREPROCESS_CHOICES:
        raise UsageError(
            f"--preprocess must be one of {', '.join(normalization.PREPROCESS_CHOICES)}. "
            f"Received: --preprocess={preprocess_mode}"
        )


def _check_xception_flags(labels: str | Path | None, outputs: str, preprocess_mode: str) -> None:
    """Refuse the flags that describe a --model when Keras Xception is exported."""
    if labels is not None:
        raise UsageError(
            f"--labels goes with --model (Xception uses the ImageNet labels). "
            f"Received: --labels={labels}"
        )
    if outputs != "auto":
        raise UsageError(
            f"--outputs goes with --model (Xception ends in softmax). Received: --outputs={outputs}"
        )
    if preprocess_mode not in ("auto", "tf"):
        raise UsageError(
            "--preprocess goes with --model (Xception takes mode tf). "
            f"Received: --preprocess={preprocess_mode}"
        )


@contextmanager
def _labels_flag(value: object) -> Iterator[None]:
    """A labels problem is a usage error naming the --labels value."""
    try:
        yield
    except LabelsError as err:
        raise UsageError(f"{err}. Received: --labels={value}") from err


def _check_common(
    interpolation: str,
    top_k: int | None,
    max_pixels: int,
    classes: int | None,
    limits: preprocess.DecodeLimits,
) -> None:
    if interpolation not in preprocess.INTERPOLATIONS:
        raise UsageError(
            f"--interpolation must be one of {', '.join(preprocess.INTERPOLATIONS)}. "
            f"Received: --interpolation={interpolation}"
        )
    if top_k is not None and (top_k < 1 or (classes is not None and top_k > classes)):
        raise UsageError(
            f"--top-k must be between 1 and the number of classes "
            f"({classes if classes else 'C'}). Received: --top-k={top_k}"
        )
    if max_pixels < 1:
        raise UsageError(f"--max-pixels must be positive. Received: --max-pixels={max_pixels}")
    for key, value in limits.flags().items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{flag} must be a positive integer. Received: {flag}={value}")


def export_keras_model(
    source: sources.ModelSource,
    labels: Labels,
    model_base_path: str | Path,
    *,
    top_k: int | None = None,
    interpolation: str = preprocess.DEFAULT_INTERPOLATION,
    max_pixels: int = contract.DEFAULT_MAX_PIXELS,
    limits: preprocess.DecodeLimits = preprocess.DEFAULT_LIMITS,
    model_version: int | None = None,
    force: bool = False,
    log: Callable[[str], None] = _stderr,
) -> ExportResult:
    """Write an already-loaded model as ``<model_base_path>/<version>`` (atomically)."""
    import tensorflow as tf

    started = time.monotonic()
    with _labels_flag(labels.source):
        labels.check_count(source.num_classes)
    _check_common(interpolation, top_k, max_pixels, source.num_classes, limits)
    if top_k is None:  # the default, capped for models with fewer classes
        top_k = min(contract.DEFAULT_TOP_K, source.num_classes)
    base_path = Path(model_base_path).absolute()
    if base_path.exists() and not base_path.is_dir():
        raise UsageError(
            f"--model-base-path must be a directory. Received: --model-base-path={model_base_path}"
        )
    version = artifact.resolve_version(base_path, model_version, force)
    staging = artifact.staging_dir(base_path, version)
    options = _GraphOptions(top_k, interpolation, max_pixels, limits)
    try:
        built = staging / str(version)
        _save_graph(source, labels, built, staging / "labels", options, log)
        records = _write_warmup(source, labels, built, options)
        metadata = _metadata(source, labels, built, version, records, options)
        artifact.write_metadata(built, metadata)
        target = artifact.publish(built, base_path, version, force)
    except (OSError, tf.errors.OpError) as err:
        raise ExportError(f"export to {base_path} failed: {err}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seconds = time.monotonic() - started
    log(f"exported version {version} to {target} in {seconds:.1f} s")
    return ExportResult(
        base_path=base_path,
        version=version,
        version_dir=target,
        input_size=source.input_size,
        num_classes=source.num_classes,
        top_k=top_k,
        metadata=metadata,
        seconds=seconds,
    )


@dataclass(frozen=True)
class _GraphOptions:
    """What the serving graph does around the network, as checked (top_k resolved)."""

    top_k: int
    interpolation: str
    max_pixels: int
    limits: preprocess.DecodeLimits


def _save_graph(
    source: sources.ModelSource,
    labels: Labels,
    built: Path,
    label_dir: Path,
    options: _GraphOptions,
    log: Callable[[str], None],
) -> None:
    """The serving graph saved as a SavedModel in ``built``, with TF Serving's method names."""
    import tensorflow as tf

    from xception_export import graph

    labels_file, keys_file = graph.write_label_assets(labels, label_dir)
    height, width = source.input_size
    log(
        f"building the serving graph ({height}x{width}, {source.num_classes} classes, "
        f"{options.interpolation} resize, preprocess {source.preprocess} from "
        f"{source.preprocess_reason}, loaded with {source.loader})"
    )
    module = graph.build_module(
        source.model,
        image_size=source.input_size,
        num_classes=source.num_classes,
        model_outputs=source.outputs,
        labels_file=labels_file,
        keys_file=keys_file,
        top_k=options.top_k,
        interpolation=options.interpolation,
        max_pixels=options.max_pixels,
        limits=options.limits,
        preprocess_mode=source.preprocess,
    )
    tf.saved_model.save(module, str(built), signatures=graph.signatures_of(module))
    graph.set_method_names(built)


def _write_warmup(
    source: sources.ModelSource, labels: Labels, built: Path, options: _GraphOptions
) -> int:
    """The warmup records, with Keras's reference answers; returns how many."""
    from xception_export import warmup

    return warmup.write_warmup(
        built / layout.WARMUP_RELPATH,
        source.input_size,
        model=source.model,
        labels=labels,
        model_outputs=source.outputs,
        top_k_classes=options.top_k,
        interpolation=options.interpolation,
        preprocess_input=normalization.reference_preprocess_input(source.preprocess),
    )


def _metadata(
    source: sources.ModelSource,
    labels: Labels,
    built: Path,
    version: int,
    records: int,
    options: _GraphOptions,
) -> dict[str, Any]:
    """What the version holds and how it was made; hashes every file already in ``built``."""
    from xception_export import graph

    height, width = source.input_size
    return {
        "tool": "xception-export",
        "tool_version": _tool_version(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": source.kind,
        "weights": source.weights,
        "untrained": source.weights == "random",
        "model_outputs": source.outputs,
        "loaded_with": source.loader,
        # [height, width] always; image_size (the side) only for square inputs, as before.
        "input_size": [height, width],
        **({"image_size": height} if height == width else {}),
        "interpolation": options.interpolation,
        "preprocess": source.preprocess,
        "preprocess_detected_from": source.preprocess_reason,
        "normalization": normalization.DESCRIPTIONS[source.preprocess],
        "num_classes": source.num_classes,
        "labels": labels.source,
        "label_keys": labels.keys is not None,
        "top_k": options.top_k,
        "max_pixels": options.max_pixels,
        **options.limits.flags(),
        "signatures": {name: method for name, method in graph.METHOD_NAMES.items()},
        "warmup_records": records,
        "version": version,
        "content_sha256": artifact.content_hashes(built),
    }
