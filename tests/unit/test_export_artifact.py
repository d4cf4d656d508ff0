"""Version numbering, atomic publishing and metadata helpers (plain files, no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import pytest
from xception_export import artifact
from xception_export.errors import UsageError, VersionExistsError


def test_existing_versions_counts_what_tf_serving_reads_as_a_version(tmp_path: Path) -> None:
    for name in ("1", "10", "2", "v3", "tmp", ".xception-v4-abc"):
        (tmp_path / name).mkdir()
    (tmp_path / "5").write_text("a file: TF Serving aspires it too, so the next export skips it")
    assert artifact.existing_versions(tmp_path) == [1, 2, 5, 10]
    assert artifact.existing_versions(tmp_path / "missing") == []


def test_next_free_version_follows_the_highest(tmp_path: Path) -> None:
    assert artifact.resolve_version(tmp_path, None, force=False) == 1
    (tmp_path / "3").mkdir()
    assert artifact.resolve_version(tmp_path, None, force=False) == 4


def test_next_free_version_is_positive_after_negative_ones(tmp_path: Path) -> None:
    (tmp_path / "-4").mkdir()  # TF Serving reads it as version -4
    assert artifact.resolve_version(tmp_path, None, force=False) == 1


def test_requested_version_must_be_free_unless_forced(tmp_path: Path) -> None:
    (tmp_path / "2").mkdir()
    with pytest.raises(VersionExistsError, match="--force"):
        artifact.resolve_version(tmp_path, 2, force=False)
    assert artifact.resolve_version(tmp_path, 2, force=True) == 2
    with pytest.raises(UsageError, match="--model-version=0"):
        artifact.resolve_version(tmp_path, 0, force=False)


def _built(base: Path, version: int, content: str) -> Path:
    staging = artifact.staging_dir(base, version)
    built = staging / str(version)
    built.mkdir()
    (built / "saved_model.pb").write_text(content)
    return built


def test_publish_renames_into_place_and_refuses_to_overwrite(tmp_path: Path) -> None:
    base = tmp_path / "xception"
    target = artifact.publish(_built(base, 1, "one"), base, 1, force=False)
    assert target == base / "1" and (target / "saved_model.pb").read_text() == "one"
    with pytest.raises(VersionExistsError):
        artifact.publish(_built(base, 1, "two"), base, 1, force=False)
    assert (target / "saved_model.pb").read_text() == "one"


def test_publish_with_force_replaces_the_whole_version(tmp_path: Path) -> None:
    base = tmp_path / "xception"
    first = artifact.publish(_built(base, 1, "one"), base, 1, force=False)
    (first / "stale.txt").write_text("from the old version")
    artifact.publish(_built(base, 1, "two"), base, 1, force=True)
    assert sorted(p.name for p in (base / "1").iterdir()) == ["saved_model.pb"]
    assert (base / "1" / "saved_model.pb").read_text() == "two"


def test_metadata_round_trip_and_content_hashes(tmp_path: Path) -> None:
    (tmp_path / "variables").mkdir()
    (tmp_path / "variables" / "v.index").write_bytes(b"abc")
    hashes = artifact.content_hashes(tmp_path)
    assert hashes == {
        "variables/v.index": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    }
    artifact.write_metadata(tmp_path, {"version": 1, "content_sha256": hashes})
    assert artifact.read_metadata(tmp_path) == {"version": 1, "content_sha256": hashes}
    assert artifact.read_metadata(tmp_path / "none") is None
