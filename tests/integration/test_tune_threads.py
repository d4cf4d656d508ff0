"""The batching tuner's batch-thread probe against real local servers (xception-serve, the TF1
Session path), one per thread count, on the suite's small Xception: what `make tune-batching`
and `make bench`'s tune phase run before writing num_batch_threads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.tune_threads import ThreadsProbe, measure_threads
from tests.fixtures.images import image_bytes


def test_the_probe_measures_every_count_on_its_own_server_and_stops_them_all(
    small_xception_model: Any, tmp_path: Path
) -> None:
    probe = ThreadsProbe(
        max_batch_size=4,
        batch_timeout_micros=0,
        thread_counts=(1, 2),
        peak_concurrency=4,
        seconds=1.0,
        rounds=1,
    )
    jpegs = [image_bytes("jpeg_420", seed=seed) for seed in range(4)]
    points = measure_threads(
        Path(small_xception_model.base_path), "xception", jpegs, probe, tmp_path
    )
    assert [p.threads for p in points] == [1, 2]
    for point in points:
        assert point.throughput > 0
        assert 0 < point.p50_ms <= point.p99_ms
        assert point.cores_busy is not None and point.cores_busy > 0
    for threads in (1, 2):
        log = (tmp_path / f"server-threads-{threads}.log").read_text()
        assert "xception-serve: ready" in log and "Server stopped" in log
