"""The command's set-up checks, before any pipeline runs: each refusal is one line naming the
flag and what is wrong, with exit 2 for usage and 1 for a model or server that cannot be used."""

from __future__ import annotations

from pathlib import Path

import pytest
from xception_bulk import launch
from xception_bulk.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        status = int(exit_.code or 0)
    return status, capsys.readouterr().err


def version_dir(tmp_path: Path) -> Path:
    found = tmp_path / "models" / "7"
    found.mkdir(parents=True)
    (found / "saved_model.pb").write_bytes(b"")
    return found


def test_no_input_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, err = run(["--output", str(tmp_path), "--server", "h:1"], capsys)
    assert status == 2
    assert "give at least one --input PATTERN or --input-manifest FILE" in err


def test_model_and_server_together_are_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = run(
        ["--input", "x", "--output", str(tmp_path), "--server", "h:1", "--model", "m"], capsys
    )
    assert status == 2
    assert "argument --model: not allowed with argument --server" in err


@pytest.mark.parametrize("flag", ["--top-k", "--batch-size", "--max-image-bytes"])
def test_counts_below_one_are_usage_errors(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = run(
        ["--input", "x", "--output", str(tmp_path), "--server", "h:1", flag, "0"], capsys
    )
    assert status == 2
    assert f"{flag} must be >= 1; received: 0" in err


def test_a_literal_input_that_does_not_exist_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.jpg"
    status, err = run(
        [
            "--input",
            str(missing),
            "--output",
            str(tmp_path / "out"),
            "--model",
            str(version_dir(tmp_path)),
        ],
        capsys,
    )
    assert (status, err) == (2, f"xception-bulk: error: --input {missing} does not exist\n")


def test_an_output_folder_holding_results_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "errors-00000-of-00001.jsonl").write_text("")
    status, err = run(
        [
            "--input",
            str(tmp_path / "*.jpg"),
            "--output",
            str(out),
            "--model",
            str(version_dir(tmp_path)),
        ],
        capsys,
    )
    assert status == 2
    assert f"--output {out} already holds results" in err and "give a new folder" in err


def test_a_model_path_without_a_saved_model_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = run(
        [
            "--input",
            str(tmp_path / "*.jpg"),
            "--output",
            str(tmp_path / "out"),
            "--model",
            str(tmp_path),
        ],
        capsys,
    )
    assert status == 2
    assert f"--model {tmp_path} is neither a version directory holding a SavedModel" in err


def test_a_manifest_with_an_unknown_suffix_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "list.tsv"
    manifest.write_text("a.jpg\n")
    status, err = run(
        [
            "--input-manifest",
            str(manifest),
            "--output",
            str(tmp_path / "out"),
            "--model",
            str(version_dir(tmp_path)),
        ],
        capsys,
    )
    assert status == 2
    assert "suffix '.tsv'; use one of .csv, .jsonl, .txt" in err


def test_in_process_mode_without_tensorflow_names_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(launch, "tensorflow_available", lambda: False)
    status, err = run(
        [
            "--input",
            str(tmp_path / "*.jpg"),
            "--output",
            str(tmp_path / "out"),
            "--model",
            str(version_dir(tmp_path)),
        ],
        capsys,
    )
    assert status == 1
    assert "in-process mode (--model) needs TensorFlow" in err
    assert "'export' extra" in err and "--server HOST:PORT" in err


def test_a_server_that_does_not_answer_fails_before_the_pipeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = run(
        [
            "--input",
            str(tmp_path / "*.jpg"),
            "--output",
            str(tmp_path / "out"),
            "--server",
            "127.0.0.1:1",
            "--timeout",
            "5",
        ],
        capsys,
    )
    assert status == 1
    assert err.startswith("xception-bulk: error: cannot use xception at 127.0.0.1:1: ")
    assert "UNAVAILABLE" in err


def test_the_local_runner_is_never_prism() -> None:
    """DirectRunner would try Prism first, which downloads a binary: a local run is given the
    Python FnApiRunner itself."""
    from apache_beam.options.pipeline_options import PipelineOptions

    assert launch.is_local(PipelineOptions([]))
    assert launch.is_local(PipelineOptions(["--runner=DirectRunner"]))
    assert not launch.is_local(PipelineOptions(["--runner=DataflowRunner"]))
    assert not launch.is_local(PipelineOptions(["--runner=PrismRunner"]))


def test_a_local_run_builds_its_pipeline_on_the_fnapi_runner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

    runners: list[object] = []

    class Stop(Exception):
        pass

    def pipeline(runner: object, options: object) -> object:
        runners.append(runner)
        raise Stop

    monkeypatch.setattr(launch.beam, "Pipeline", pipeline)
    for flags in ([], ["--runner=DirectRunner"]):
        with pytest.raises(Stop):
            launch.run(None, PipelineOptions(flags), None)  # type: ignore[arg-type]
    assert [type(r) for r in runners] == [FnApiRunner, FnApiRunner]


def test_an_unreadable_certificate_is_named_before_any_connection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "ca.pem"
    status, err = run(
        [
            "--input",
            str(tmp_path / "*.jpg"),
            "--output",
            str(tmp_path / "out"),
            "--server",
            "127.0.0.1:1",
            "--ca-cert",
            str(missing),
        ],
        capsys,
    )
    assert status == 2
    assert err.startswith(f"xception-bulk: error: --ca-cert {missing} cannot be read: ")
