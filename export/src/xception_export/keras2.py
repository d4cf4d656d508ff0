"""Keras 2 model files (TF <= 2.15's ``model.save``): told apart from Keras 3 files, loaded with
``tf_keras``.

Keras 3 cannot rebuild Keras 2's layer configs (e.g. SeparableConv2D's ``groups``), so the file
itself decides: an ``.h5`` records the Keras that wrote it in its ``keras_version`` attribute
(Keras 3 writes 3.x there), a ``.keras`` zip (tf_keras >= 2.13 writes those too) in its
``metadata.json``, and a Keras 2 SavedModel directory holds ``keras_metadata.pb``.
``tf_keras`` is imported directly: setting TF_USE_LEGACY_KERAS would switch ``tf.keras`` to
Keras 2 for the whole process, including the Keras 3 code paths of the export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from xception_contract import extras

from xception_export.errors import ExportError

KERAS_METADATA_FILE: Final = "keras_metadata.pb"


def h5_keras_version(path: Path) -> str | None:
    """The ``keras_version`` an ``.h5`` model file was written by, or None if it has none."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get("keras_version")
    except OSError:
        return None  # not HDF5: let the loader name the problem
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def zip_keras_version(path: Path) -> str | None:
    """The ``keras_version`` in a ``.keras`` zip's metadata.json, or None if it has none."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            metadata = json.loads(archive.read("metadata.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    value = metadata.get("keras_version") if isinstance(metadata, dict) else None
    return str(value) if value is not None else None


def is_keras2_file(path: Path) -> bool:
    """True when ``path`` was written by Keras 2 (.h5, .keras or a SavedModel directory)."""
    if path.is_dir():
        return (path / KERAS_METADATA_FILE).is_file()
    import zipfile

    version = zip_keras_version(path) if zipfile.is_zipfile(path) else h5_keras_version(path)
    return version is not None and version.split(".")[0] == "2"


def load(path: Path) -> Any:
    """The Keras 2 model at ``path``, loaded with tf_keras (uncompiled)."""
    try:
        import tf_keras
    except ImportError as err:  # an install without the pinned dependency
        raise ExportError(
            f"{path} was written by Keras 2, which needs the tf_keras package "
            f"({extras.install_hint('export')})"
        ) from err
    return tf_keras.models.load_model(str(path), compile=False)
