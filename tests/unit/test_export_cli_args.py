"""Argument handling of ``xception-export``, in-process: usage errors echo the value and return 2
before any TensorFlow import."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import xception_contract as contract
from xception_export import cli


def test_defaults_are_imagenet_weights_exported_under_the_contract_s_model_name() -> None:
    args = cli.export_parser().parse_args([])
    assert args.weights == "imagenet"
    assert args.model_base_path == f"models/{contract.DEFAULT_MODEL_NAME}"
    assert args.interpolation == "nearest" and args.outputs == "auto"
    assert args.max_pixels == contract.DEFAULT_MAX_PIXELS == 40_000_000
    assert args.top_k is None and args.model_version is None  # the export's own defaults


@pytest.mark.parametrize(
    ("argv", "echo"),
    [
        (["--weights", "missing.h5"], "--weights=missing.h5"),
        (["--labels", "x.txt"], "--labels=x.txt"),
        (["--outputs", "logits"], "--outputs=logits"),
        (["--weights", "random", "--image-size", "70"], "--image-size=70"),
        (["--weights", "random", "--image-size", "80,70"], "--image-size=80,70"),
        (["--weights", "random", "--preprocess", "caffe"], "--preprocess=caffe"),
        (["--weights", "random", "--top-k", "1001"], "--top-k=1001"),
        (["--model", "missing.keras", "--labels", "x.txt"], "--labels=x.txt"),
    ],
)
def test_usage_errors_return_2_and_echo_the_value(
    argv: list[str], echo: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main([*argv, "--model-base-path", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert echo in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--top-k", "abc"],
        ["--interpolation", "area"],
        ["--bogus"],
        ["--image-size", "80,72,3"],
        ["--image-size", "80,0"],
        ["--preprocess", "keras"],
    ],
)
def test_argparse_errors_exit_2_echoing_the_value(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert argv[-1] in capsys.readouterr().err


def test_image_size_takes_a_side_or_height_comma_width() -> None:
    parse = cli.export_parser().parse_args
    assert parse(["--image-size", "96"]).image_size == 96
    assert parse(["--image-size", "160,120"]).image_size == (160, 120)  # load_img's (h, w)
    assert parse([]).preprocess == "auto"


def test_usage_errors_do_not_import_tensorflow(tmp_path: Path) -> None:
    # Fast failure matters: importing TensorFlow costs seconds before the user sees the typo.
    import subprocess

    code = (
        "import sys; from xception_export import cli; "
        f"rc = cli.main(['--weights', 'nope', '--model-base-path', {str(tmp_path)!r}]); "
        "sys.exit(10 + rc if 'tensorflow' in sys.modules else rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 2, done.stderr
