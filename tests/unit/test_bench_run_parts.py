"""The benchmark's plumbing that needs no model or server: its options and their paths, /proc
parsing, the image cache, the limit process protocol and the local server's flags."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from xception_serving.testing import process as server_process
from xception_serving.testing.process import ServerSpec

from benchmarks import image_cache, limit_process, local_server, machine
from benchmarks.options import parse_options


def test_paths_default_to_places_in_the_repository(tmp_path: Path) -> None:
    options = parse_options(["--repo", str(tmp_path), "--image-size", "71"])
    assert options.build_dir == tmp_path / "build" / "bench"
    assert options.batching_config == tmp_path / "serving" / "batching-cpu.config"
    assert options.output_dir == tmp_path / "benchmarks" / "results"
    assert options.model_base_path == tmp_path / "models" / "bench" / "xception-71"
    assert options.local and options.footprint == "venv"
    assert options.tune == "auto"  # re-tunes where the config was not tuned on this host


def test_paths_given_on_the_command_line_win(tmp_path: Path) -> None:
    options = parse_options(
        [
            "--repo",
            str(tmp_path),
            "--build-dir",
            str(tmp_path / "b"),
            "--output-dir",
            str(tmp_path / "o"),
            "--tfserving-target",
            "h:1",
        ]
    )
    assert (options.build_dir, options.output_dir) == (tmp_path / "b", tmp_path / "o")
    assert not options.local


def test_a_quick_run_measures_the_footprint_from_records_unless_the_venv_is_cached(
    tmp_path: Path,
) -> None:
    assert parse_options(["--quick", "--repo", str(tmp_path)]).footprint == "records"
    cache = tmp_path / "build" / "bench" / "footprint-venv.json"
    cache.parent.mkdir(parents=True)
    cache.write_text("{}")
    assert parse_options(["--quick", "--repo", str(tmp_path)]).footprint == "venv"


def test_the_command_says_how_to_run_it_again() -> None:
    options = parse_options(["--quick", "--model-name", "my model"])
    assert options.command == "python -m benchmarks.run --quick --model-name 'my model'"


def test_cpu_model_and_memory_come_from_proc_files(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU @ 2.0GHz\nflags\t\t: avx\n")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24641536 kB\nMemFree:         1000 kB\n")
    assert machine.cpu_model(cpuinfo) == "Test CPU @ 2.0GHz"
    assert machine.memory_gib(meminfo) == 23.5
    assert machine.memory_gib(tmp_path / "missing") is None


def test_the_image_set_is_generated_once_then_read_back(tmp_path: Path) -> None:
    first = image_cache.bench_images(tmp_path, 3, seed=9)
    assert first.folder == image_cache.images_dir(tmp_path, 3, 9)
    assert len(list(first.folder.glob("*.jpg"))) == 3
    again = image_cache.bench_images(tmp_path, 3, seed=9)
    assert again.images == first.images
    assert again.mean_bytes == pytest.approx(sum(map(len, first.data)) / 3)


def test_generated_file_names_carry_size_and_quality() -> None:
    assert image_cache.parse_name("photo007_1024x768_q88.jpg") == (1024, 768, 88)


def test_the_limit_protocol_reads_passes_and_parity_requests() -> None:
    lines = ["[1, 4]\n", "[]\n", json.dumps({limit_process.PARITY: True}) + "\n"]
    assert list(limit_process.read_requests(lines)) == [
        limit_process.Request(batch_sizes=(1, 4)),
        limit_process.Request(),
        limit_process.Request(parity=True),
    ]


def test_the_limit_protocol_sends_one_json_event_per_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    limit_process.send_event(limit_process.RESULT, per_batch_size=[])
    assert json.loads(out.getvalue()) == {"event": "result", "per_batch_size": []}
    assert out.getvalue().count("\n") == 1


def test_benchmark_servers_do_not_poll_and_batch_only_with_a_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launched: list[tuple[Path, ServerSpec]] = []
    monkeypatch.setattr(
        server_process, "launch", lambda log_path, spec: launched.append((log_path, spec))
    )
    config = tmp_path / "batching.config"
    local_server.launch(
        "on",
        model_name="m",
        model_base_path=tmp_path,
        log_dir=tmp_path,
        batching_config=config,
        extra_args=("--mixed_precision=bfloat16",),
    )
    local_server.launch(
        "off",
        model_name="m",
        model_base_path=tmp_path,
        log_dir=tmp_path,
        batching_config=None,
        rest=True,
    )
    (on_log, on), (off_log, off) = launched
    assert (on_log, off_log) == (tmp_path / "server-on.log", tmp_path / "server-off.log")
    assert on.extra_args == [
        "--file_system_poll_wait_seconds=0",
        "--enable_batching=true",
        f"--batching_parameters_file={config}",
        "--mixed_precision=bfloat16",
    ]
    assert off.extra_args == ["--file_system_poll_wait_seconds=0"]
    assert (on.rest, off.rest) == (False, True)
    assert on.model_name == "m" and on.model_base_path == tmp_path
