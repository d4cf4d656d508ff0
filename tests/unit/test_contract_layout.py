"""Which children of a base path are versions: TF Serving's rule, in one function every part uses.

TF Serving (file_system_storage_path_source.cc) keeps a child whose name strings::safe_strto64
parses (white space around, an optional '-', ASCII digits, int64), files included; where two names
give one number the later in byte order wins.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from xception_contract import extras, layout


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("1", 1),
        ("00000123", 123),
        ("-3", -3),
        (" 7 ", 7),
        ("\t8\n", 8),
        (str(2**63 - 1), 2**63 - 1),
        (str(-(2**63)), -(2**63)),
    ],
)
def test_names_tf_serving_reads_as_versions(name: str, version: int) -> None:
    assert layout.parse_version(name) == version


@pytest.mark.parametrize(
    "name",
    [
        "",
        " ",
        "-",
        "+1",
        "1.0",
        "1e3",
        "v1",
        "1a",
        ".1",
        "١٢",
        "²",
        str(2**63),
        str(-(2**63) - 1),
        ".tmp-3",
        "3 4",
    ],
)
def test_names_tf_serving_skips(name: str) -> None:
    assert layout.parse_version(name) is None


def test_version_dirs_lists_numeric_children_ascending_files_included(tmp_path: Path) -> None:
    for name in ("10", "2", "notes", ".tmp-5", "-1"):
        (tmp_path / name).mkdir()
    (tmp_path / "3").write_text("a file: TF Serving aspires it too, and its load fails")
    assert layout.version_dirs(tmp_path) == {
        -1: tmp_path / "-1",
        2: tmp_path / "2",
        3: tmp_path / "3",
        10: tmp_path / "10",
    }
    assert layout.latest_version_dir(tmp_path) == tmp_path / "10"


def test_duplicate_numbers_keep_the_name_later_in_byte_order(tmp_path: Path) -> None:
    for name in ("007", "7", "07"):
        (tmp_path / name).mkdir()
    seen: list[tuple[int, Path, Path]] = []
    found = layout.version_dirs(tmp_path, on_duplicate=lambda *args: seen.append(args))
    assert found == {7: tmp_path / "7"}
    assert seen == [(7, tmp_path / "07", tmp_path / "007"), (7, tmp_path / "7", tmp_path / "07")]


def test_a_missing_base_path_is_an_error_to_list_and_has_no_latest(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        layout.version_dirs(tmp_path / "absent")
    assert layout.latest_version_dir(tmp_path / "absent") is None


def test_resolve_takes_a_version_directory_or_the_latest_under_a_base_path(tmp_path: Path) -> None:
    for version in ("1", "2"):
        (tmp_path / version).mkdir()
        (tmp_path / version / layout.SAVED_MODEL_FILE).write_bytes(b"")
    assert layout.resolve_version_dir(tmp_path / "1") == tmp_path / "1"
    assert layout.resolve_version_dir(tmp_path) == tmp_path / "2"
    (tmp_path / "3").mkdir()  # the latest holds no SavedModel: TF Serving would fail to load it
    assert layout.resolve_version_dir(tmp_path) is None
    assert layout.resolve_version_dir(tmp_path / "absent") is None


def test_a_command_without_its_extra_exits_with_the_install_that_fixes_it() -> None:
    with pytest.raises(SystemExit) as exited:
        extras.require("xception-serve", "serve", ["json", "no_such_module_here"])
    assert str(exited.value) == (
        "xception-serve needs the 'serve' extra (missing: no_such_module_here): "
        "pip install 'xception-serving-bundle[serve]'"
    )


def test_a_command_with_its_extra_installed_goes_on() -> None:
    assert extras.require("xception-client", "client", ["json", "os"]) is None
