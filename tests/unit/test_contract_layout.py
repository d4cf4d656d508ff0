"""Which children of a base path are versions: TF Serving's rule, in one function every part uses.

TF Serving (file_system_storage_path_source.cc) keeps a child whose name strings::safe_strto64
parses (white space around, an optional '-', ASCII digits, int64), files included; where two names
give one number the later in byte order wins.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from xception_contract import layout


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
    ["", " ", "-", "+1", "1.0", "1e3", "v1", "1a", ".1", "١٢", "²", str(2**63), str(-(2**63) - 1),
     ".tmp-3", "3 4"],
)
def test_names_tf_serving_skips(name: str) -> None:
    assert layout.parse_version(name) is None


def test_version_dirs_lists_numeric_children_ascending_files_included(tmp_path: Path) -> None:
    for name in ("10", "2", "notes", ".tmp-5", "-1"):
        (tmp_path / name).mkdir()
    (tmp_path / "3").write_text("a file: TF Serving aspires it too, and its load fails")
    assert layout.version_dirs(tmp_path) == {
        -1: tmp_path / "-1", 2: tmp_path / "2", 3: tmp_path / "3", 10: tmp_path / "10"
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


def test_the_contract_package_imports_nothing_but_the_standard_library() -> None:
    code = (
        "import sys, xception_contract, xception_contract.layout, xception_contract.tf_startup\n"
        "ours = {'xception_client', 'xception_export', 'xception_serving', 'grpc', 'numpy',"
        " 'tensorflow', 'google'}\n"
        "print(sorted(ours & {m.split('.')[0] for m in sys.modules}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_server_process_never_imports_the_client() -> None:
    # Every module of the server package, imported as xception-serve would reach it.
    code = (
        "import importlib, pkgutil, sys, xception_serving\n"
        "for m in pkgutil.walk_packages(xception_serving.__path__, 'xception_serving.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('xception_client')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=300)
    assert done.stdout.strip().splitlines()[-1] == "[]"
