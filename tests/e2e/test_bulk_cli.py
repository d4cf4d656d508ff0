"""xception-bulk as a user runs it: a folder with good images and a bad one, in process on the
small test model, Parquet output: exit 0, one summary line, every input in one file or the
other, and the Parquet columns the JSON Lines records have."""

from __future__ import annotations

import re
from pathlib import Path

from tests.fixtures.bulk import read_output, write_bad_inputs, write_good_images
from tests.fixtures.commands import console_script, run_command
from tests.fixtures.models import ExportedModel

SUMMARY = re.compile(
    r"^xception-bulk: classified (\d+), errors (\d+), [\d.]+ images/s, wall time [\d.]+ s, "
    r"first result after [\d.]+ s, then [\d.]+ images/s, output (.+)$"
)


def test_bulk_command_classifies_a_folder_into_parquet_and_errors(
    small_xception_model: ExportedModel, tmp_path: Path
) -> None:
    good = write_good_images(tmp_path / "images")
    bad = [b for b in write_bad_inputs(tmp_path / "bad") if b.path.endswith("not_an_image.jpg")]
    (tmp_path / "images" / "not_an_image.jpg").write_bytes(Path(bad[0].path).read_bytes())
    out = tmp_path / "out"
    result = run_command(
        [
            console_script("xception-bulk"),
            "--input",
            str(tmp_path / "images" / "*"),
            "--output",
            str(out),
            "--model",
            str(small_xception_model.base_path),
            "--format",
            "parquet",
            "--top-k",
            "3",
            "--runner=DirectRunner",
        ],
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [m for m in map(SUMMARY.match, result.stderr.splitlines()) if m]
    assert len(summaries) == 1, result.stderr[-3000:]
    assert summaries[0].groups() == (str(len(good)), "1", str(out))
    output = read_output(out)
    assert sorted(r["path"] for r in output.predictions) == sorted(good)
    assert [(e["path"], e["stage"], e["code"]) for e in output.errors] == [
        (str(tmp_path / "images" / "not_an_image.jpg"), "decode", "INVALID_ARGUMENT")
    ]
    record = output.predictions[0]
    assert sorted(record) == ["id", "model", "path", "top_k", "version"]
    assert (record["id"], record["model"], record["version"]) == (None, "xception", 1)
    assert [sorted(p) for p in record["top_k"]] == [["class_id", "key", "label", "score"]] * 3
