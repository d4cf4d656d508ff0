"""Versioned, atomic writes: next free version, no overwrite without force, and a reader polling the
base path never sees a half-written version. Uses a tiny classifier so exports take seconds."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from xception_export.artifact import existing_versions, read_metadata

# The tiny model has no keras.applications base to tell its preprocess_input from: name it.
QUIET_TF: dict[str, Any] = {"preprocess_mode": "tf", "log": lambda _m: None}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
    folder = tmp_path_factory.mktemp("tiny")
    model.save(folder / "tiny.keras")
    (folder / "labels.json").write_text('{"0": "a", "1": "b", "2": "c", "3": "d"}')
    return folder / "tiny.keras", folder / "labels.json"


def _complete(version_dir: Path) -> str | None:
    """None if the version is complete and consistent, else what is wrong."""
    meta = read_metadata(version_dir)
    if meta is None:
        return "no metadata"
    for rel, digest in meta["content_sha256"].items():
        path = version_dir / rel
        if not path.is_file():
            return f"missing {rel}"
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            return f"partial {rel}"
    return None


def test_concurrent_reader_never_sees_a_partial_version(
    tmp_path: Path, tiny_model: tuple[Path, Path]
) -> None:
    from xception_export.api import export

    base = tmp_path / "tiny"
    problems: list[str] = []
    checked: set[str] = set()
    stop = threading.Event()

    def poll() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            finished = stop.is_set()  # one last scan after the exports return
            if base.is_dir():
                for child in base.iterdir():
                    if child.name.isdigit() and child.name not in checked:
                        checked.add(child.name)
                        problem = _complete(child)
                        if problem:
                            problems.append(f"{child.name}: {problem}")
            if finished:
                break
            time.sleep(0.002)

    reader = threading.Thread(target=poll, daemon=True)
    reader.start()
    try:
        model, labels = tiny_model
        for _ in range(2):
            export(base, model=model, labels=labels, **QUIET_TF)
    finally:
        stop.set()
        reader.join(timeout=30)
    assert existing_versions(base) == [1, 2]
    assert checked == {"1", "2"}
    assert problems == []
    # Staging directories beside the base path are cleaned up.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_existing_version_is_kept_without_force_and_replaced_with_it(
    tmp_path: Path, tiny_model: tuple[Path, Path]
) -> None:
    from xception_export.api import export
    from xception_export.errors import VersionExistsError

    model, labels = tiny_model
    base = tmp_path / "tiny"
    first = export(base, model=model, labels=labels, model_version=7, **QUIET_TF)
    created = first.metadata["created"]
    with pytest.raises(VersionExistsError, match="--force"):
        export(base, model=model, labels=labels, model_version=7, **QUIET_TF)
    assert read_metadata(base / "7") == first.metadata
    again = export(base, model=model, labels=labels, model_version=7, force=True, **QUIET_TF)
    assert again.version == 7 and existing_versions(base) == [7]
    assert _complete(base / "7") is None
    assert read_metadata(base / "7")["content_sha256"] == again.metadata["content_sha256"]
    assert created <= again.metadata["created"]
