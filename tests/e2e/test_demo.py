"""`python -m demo.run` (what `make run` runs) on an already exported model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import xception_contract as contract

from tests.fixtures.commands import REPO, run_command


def run_demo(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`python -m demo.run` from the repository root, as `make run` runs it."""
    return run_command([sys.executable, "-m", "demo.run", *args], timeout=timeout, cwd=REPO)


def test_demo_serves_and_prints_the_top_k_table(
    small_xception_model, sample_jpeg: bytes, tmp_path: Path
) -> None:
    image = tmp_path / "cat.jpg"
    image.write_bytes(sample_jpeg)
    result = run_demo(
        "--weights", "random",  # unused: a version exists, so nothing is exported
        "--model-base-path", str(small_xception_model.base_path),
        "--model-name", contract.DEFAULT_MODEL_NAME,
        "--image", str(image),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == str(image)
    assert lines[1].split() == ["rank", "score", "label"]
    rows = lines[2:]
    assert len(rows) == contract.DEFAULT_TOP_K
    scores = [float(row.split()[1]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert "exporting" not in result.stderr
    version_dir = small_xception_model.version_dir
    said = [line for line in result.stderr.splitlines() if line.startswith("demo: ")]
    assert said[0].startswith(f"demo: serving {version_dir} (weights: ")
    # The fixture holds a weights file, not the asked-for random weights: say how to re-export.
    assert said[1].startswith("demo: WEIGHTS=random was asked for, but this version holds ")
    assert "make export WEIGHTS=random" in said[1]
    assert not any("WARNING" in line for line in said)  # trained-style weights: no warning


def test_demo_missing_image_fails_with_one_clear_line(tmp_path: Path) -> None:
    result = run_demo("--model-base-path", str(tmp_path), "--image", str(tmp_path / "no.jpg"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"demo: error: image not found: {tmp_path / 'no.jpg'}"
    ]
