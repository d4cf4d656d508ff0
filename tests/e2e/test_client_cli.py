"""The real `xception-client` console script against the local server, as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.commands import console_script, run_command


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """xception-client with `args`, `env` added to this process's environment."""
    return run_command(
        [console_script("xception-client"), *args],
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli-images")
    rng = np.random.default_rng(0)
    for i, fmt in enumerate(("jpg", "png", "gif")):
        pixels = rng.integers(0, 256, (60 + i, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.{fmt}")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_predict_prints_a_table_and_exits_0(xception_server: Any, images: Path) -> None:
    result = _run(
        "predict", str(images / "img0.jpg"), "--server", xception_server.grpc_target, "--top-k", "3"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("img0.jpg") and lines[1].split() == ["rank", "score", "label"]
    assert [line.split()[0] for line in lines[2:]] == ["1", "2", "3"]


def test_predict_directory_streams_json_lines_with_summary_on_stderr(
    xception_server: Any, images: Path
) -> None:
    result = _run(
        "predict", str(images), "--json", env={"XCEPTION_SERVER": xception_server.grpc_target}
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["image"]).name for r in records] == ["img0.jpg", "img1.png", "img2.gif"]
    for record in records:
        assert len(record["predictions"]) == 5
        assert set(record["predictions"][0]) == {"label", "key", "score", "class_id"}
    assert "3/3 images classified, 0 failed" in result.stderr


def test_status_and_metadata_commands_print_the_served_model(xception_server: Any) -> None:
    status = _run("status", "--server", xception_server.grpc_target)
    assert status.returncode == 0, status.stderr
    assert "AVAILABLE" in status.stdout
    metadata = _run("metadata", "--server", xception_server.grpc_target)
    assert metadata.returncode == 0, metadata.stderr
    assert "input  image_bytes: DT_STRING [-1]" in metadata.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no_such_model"], "NOT_FOUND: Servable not found"),
        (["--top-k", "50"], "top_k=50 but the served model exports its 5 best"),
    ],
)
def test_errors_exit_1_with_one_clear_line(
    xception_server: Any, images: Path, args: list[str], message: str
) -> None:
    result = _run(
        "predict", str(images / "img1.png"), "--server", xception_server.grpc_target, *args
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_rest_port_exits_1_pointing_at_the_grpc_port(xception_server: Any, images: Path) -> None:
    rest = str(xception_server.rest_url).split("://", 1)[-1]
    result = _run("status", "--server", rest, "--timeout", "10")
    assert result.returncode == 1
    assert "does not speak gRPC" in result.stderr and "8500" in result.stderr


def test_usage_error_exits_2() -> None:
    result = _run("predict")
    assert result.returncode == 2
    assert "usage:" in result.stderr
