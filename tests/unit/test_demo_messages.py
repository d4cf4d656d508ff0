"""What `make run` says about the version it serves (demo.run.describe_version)."""

from __future__ import annotations

import json
from pathlib import Path

from demo.run import EXPORT_METADATA, describe_version


def _version(tmp_path: Path, **metadata: object) -> Path:
    version_dir = tmp_path / "xception" / "3"
    (version_dir / EXPORT_METADATA).parent.mkdir(parents=True)
    (version_dir / EXPORT_METADATA).write_text(json.dumps(metadata))
    return version_dir


def test_random_weights_get_a_warning_and_the_re_export_command_when_imagenet_was_asked(
    tmp_path: Path,
) -> None:
    version_dir = _version(
        tmp_path,
        weights="random",
        untrained=True,
        source="keras.applications.Xception",
        created="2026-12-01T20:00:28+00:00",
    )
    lines = describe_version(version_dir, "imagenet")
    assert lines == [
        f"demo: serving {version_dir} (weights: random, exported 2026-12-01T20:00:28+00:00)",
        "demo: WARNING: this version has untrained --weights random: its predictions are "
        "meaningless (plumbing only)",
        "demo: WEIGHTS=imagenet was asked for, but this version holds random; to serve "
        "imagenet, export the next version: make export WEIGHTS=imagenet "
        f"MODEL_BASE_PATH={version_dir.parent} (then make run serves it)",
    ]


def test_the_asked_for_weights_give_one_line_and_no_warning(tmp_path: Path) -> None:
    version_dir = _version(
        tmp_path, weights="imagenet", untrained=False, source="keras.applications.Xception"
    )
    lines = describe_version(version_dir, "imagenet")
    assert len(lines) == 1 and "(weights: imagenet," in lines[0]


def test_a_fine_tuned_model_is_not_compared_with_the_weights_flag(tmp_path: Path) -> None:
    version_dir = _version(tmp_path, weights="/models/clothes.keras", source="model")
    assert len(describe_version(version_dir, "imagenet")) == 1


def test_a_version_without_export_metadata_says_its_weights_are_unknown(tmp_path: Path) -> None:
    version_dir = tmp_path / "m" / "1"
    version_dir.mkdir(parents=True)
    (line,) = describe_version(version_dir, "imagenet")
    assert line.startswith(f"demo: serving {version_dir} (no readable ")
    assert "its weights are unknown" in line
