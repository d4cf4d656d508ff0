"""Manifests: the suffix says how lines read (.txt URIs, .csv with a path[,id] header, .jsonl
objects), relative URIs are relative to the manifest's folder, and a bad line or manifest is
refused naming what is wrong."""

from __future__ import annotations

import pytest
from xception_bulk.manifest import ManifestError, manifest_format, parse_line, resolve
from xception_bulk.records import ImageRef


def test_txt_lines_are_uris_and_comments_and_blanks_are_skipped() -> None:
    fmt = manifest_format("/data/list.txt", None)
    assert parse_line(fmt, "cats/a.jpg\n") == ImageRef("/data/cats/a.jpg")
    assert parse_line(fmt, "gs://bucket/b.png") == ImageRef("gs://bucket/b.png")
    assert parse_line(fmt, "  ") is None
    assert parse_line(fmt, "# a comment") is None
    assert fmt.skip_header_lines == 0


def test_csv_reads_path_and_id_columns_in_any_order() -> None:
    fmt = manifest_format("gs://b/in/list.csv", "id,Path\n")
    assert fmt.skip_header_lines == 1
    assert parse_line(fmt, "17,img/a.jpg") == ImageRef("gs://b/in/img/a.jpg", "17")
    assert parse_line(fmt, '"x,1",/abs/b.jpg') == ImageRef("/abs/b.jpg", "x,1")


def test_csv_with_uri_column_and_no_id_gives_none_ids() -> None:
    fmt = manifest_format("list.csv", "uri")
    assert parse_line(fmt, "a.jpg") == ImageRef("a.jpg", None)


def test_csv_without_a_path_column_is_refused() -> None:
    with pytest.raises(ManifestError, match=r"header \['name', 'id'\] has no 'path' or 'uri'"):
        manifest_format("list.csv", "name,id")


def test_csv_without_header_is_refused() -> None:
    with pytest.raises(ManifestError, match=r"list\.csv has no header line"):
        manifest_format("list.csv", None)


def test_jsonl_reads_path_and_numeric_id() -> None:
    fmt = manifest_format("s3://b/list.jsonl", None)
    assert parse_line(fmt, '{"path": "a.jpg", "id": 5}') == ImageRef("s3://b/a.jpg", "5")
    assert parse_line(fmt, '{"uri": "/x/b.jpg"}') == ImageRef("/x/b.jpg", None)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line is not JSON"),
        ("[1, 2]", "line is not a JSON object"),
        ('{"id": 3}', "line has no 'path' or 'uri' string"),
        ('{"path": 3}', "line has no 'path' or 'uri' string"),
    ],
)
def test_bad_jsonl_lines_are_refused_naming_the_manifest(line: str, message: str) -> None:
    fmt = manifest_format("list.jsonl", None)
    with pytest.raises(ManifestError, match=f"manifest list.jsonl: {message}"):
        parse_line(fmt, line)


def test_unknown_suffix_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ManifestError, match=r"suffix '\.tsv'; use one of \.csv, \.jsonl, \.txt"):
        manifest_format("list.tsv", None)


@pytest.mark.parametrize(
    ("base", "uri", "expected"),
    [
        ("/data", "a/../b.jpg", "/data/b.jpg"),
        (".", "b.jpg", "b.jpg"),
        ("gs://bucket/dir", "x.jpg", "gs://bucket/dir/x.jpg"),
        ("/data", "/abs.jpg", "/abs.jpg"),
        ("/data", "s3://b/k.jpg", "s3://b/k.jpg"),
    ],
)
def test_relative_uris_resolve_against_the_manifest_folder(
    base: str, uri: str, expected: str
) -> None:
    assert resolve(base, uri) == expected
