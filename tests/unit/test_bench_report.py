"""Benchmark reporting and client-side pieces that need no model or server: the table, the plot,
the usual-way preprocessing and request (TF Serving's own messages), the closed-loop driver and
the image generator."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xception_contract as contract
from PIL import Image

from benchmarks import images, load, report, stats

ROWS = [
    {
        "variant": "grpc-bytes",
        "concurrency": c,
        "batching": b,
        "throughput": t,
        "p50_ms": 100.0,
        "p95_ms": 150.0,
        "p99_ms": 200.0,
        "requests": 40,
        "errors": 0,
        "request_bytes_per_image": 60_000.0,
        "client_cpu_ms_per_image": 0.9,
    }
    for c, b, t in [(1, True, 6.0), (4, True, 8.5), (1, False, 6.1), (4, False, 7.0)]
]


def _doc() -> dict[str, Any]:
    limit = {
        "throughput": 9.0,
        "latency_p50_ms": 95.0,
        "best_batch_size": 8,
        "signature": "serving_pixels",
        "per_batch_size": [{"batch_size": 8, "throughput": 9.0}],
    }
    ratios = dict.fromkeys(stats.RATIO_KEYS, 2.0)
    return {
        "date": "2026-01-01T00:00:00+00:00",
        "machine": {"cpu_model": "Test CPU", "cores": 2},
        "setup": {"image_size": 299, "images": 4, "mean_jpeg_bytes": 60_000.0},
        "limit": limit,
        "served": ROWS,
        "ratios": ratios,
        "targets": stats.evaluate_targets(
            limit=limit, served=ROWS, ratios=ratios, bytes_variant="grpc-bytes"
        ),
    }


def test_format_table_shows_every_served_row_limit_and_each_target() -> None:
    table = report.format_table(_doc())
    assert "LIMIT in-process serving_pixels: 9.0 img/s at batch 8" in table
    assert sum(line.startswith("grpc-bytes") for line in table.splitlines()) == len(ROWS)
    for name in _doc()["targets"]:
        assert name in table
    assert "served_throughput_vs_limit" in table and "FAILS" in table  # request bytes 2x < 20x


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = report.plot(_doc(), tmp_path / "out.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.width > 500


def _jpeg(width: int, height: int) -> bytes:
    rng = np.random.default_rng(1)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


def test_keras_style_preprocess_is_nearest_resize_then_x_over_127_5_minus_1() -> None:
    data = _jpeg(40, 30)
    from benchmarks import usual_way

    x = usual_way.keras_style_preprocess(data, 8)
    with Image.open(io.BytesIO(data)) as image:
        resized = image.convert("RGB").resize((8, 8), Image.Resampling.NEAREST)
        expected = np.asarray(resized, np.float32)
    assert x.shape == (1, 8, 8, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], expected / np.float32(127.5) - np.float32(1.0))


def test_preprocessed_request_carries_the_float_tensor_in_tensor_content() -> None:
    import tensorflow as tf

    from benchmarks import usual_way

    x = np.random.default_rng(2).uniform(-1, 1, (1, 5, 5, 3)).astype(np.float32)
    request = usual_way.preprocessed_request("m", x)
    tensor = request.inputs[contract.PREPROCESSED_INPUT]
    assert request.model_spec.name == "m"
    assert request.model_spec.signature_name == contract.PREPROCESSED_SIGNATURE
    assert len(tensor.tensor_content) == x.nbytes
    np.testing.assert_array_equal(tf.make_ndarray(tensor), x)
    assert tensor == tf.make_tensor_proto(x)  # the tensor a TensorFlow user would send


def test_usual_way_reads_the_top_k_outputs_as_a_tensorflow_user_does() -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from benchmarks import usual_way

    response = predict_pb2.PredictResponse()
    outputs = {
        contract.TOP_K_SCORES_OUTPUT: np.array([[0.7, 0.2], [0.6, 0.3]], np.float32),
        contract.TOP_K_CLASS_IDS_OUTPUT: np.array([[3, 1], [0, 2]], np.int32),
        contract.TOP_K_LABELS_OUTPUT: np.array([[b"cat", b"dog"], [b"ant", b"bee"]], object),
    }
    for alias, value in outputs.items():
        response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
    best = usual_way.top_k(response, 1)
    assert [[(i, label) for i, label, _ in row] for row in best] == [[(3, "cat")], [(0, "ant")]]
    assert best[0][0][2] == pytest.approx(0.7)


def test_rest_body_is_tf_serving_b64_instances() -> None:
    import base64
    import json

    body = json.loads(load.RestB64.body(b"\xff\xd8\xffjpeg"))
    assert body == {"instances": [{"b64": base64.b64encode(b"\xff\xd8\xffjpeg").decode()}]}


def test_closed_loop_runs_each_request_once_and_counts_errors() -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def work(_worker: int, index: int) -> None:
        time.sleep(0.002)
        with lock:
            seen.append(index)
        if index % 5 == 0:
            raise RuntimeError("boom")

    result = load.closed_loop(work, concurrency=3, duration_s=30.0, max_requests=20)
    assert sorted(seen) == list(range(20))
    assert result.errors == 4 and result.completed == 16
    assert len(result.latencies_s) == 16 and min(result.latencies_s) >= 0.002
    assert result.first_error == "RuntimeError: boom"


def test_closed_loop_stops_at_the_duration() -> None:
    started = time.perf_counter()
    # min_requests: on a loaded machine the threads may only start after the 0.2 s deadline
    result = load.closed_loop(
        lambda _w, _i: time.sleep(0.01),
        concurrency=2,
        duration_s=0.2,
        max_requests=10_000,
        min_requests=2,
    )
    assert time.perf_counter() - started < 5.0
    assert 2 <= result.completed < 200


def test_generated_images_are_seeded_jpegs_of_the_requested_sizes() -> None:
    sizes = [(64, 48), (48, 64)]
    first = images.generate(3, seed=9, sizes=sizes)
    assert [im.data for im in first] == [im.data for im in images.generate(3, seed=9, sizes=sizes)]
    assert [im.data for im in first] != [im.data for im in images.generate(3, seed=10, sizes=sizes)]
    for im, (w, h) in zip(first, [*sizes, sizes[0]], strict=True):
        with Image.open(io.BytesIO(im.data)) as decoded:
            assert decoded.format == "JPEG" and decoded.size == (w, h)
        assert im.quality in images.QUALITIES


@pytest.mark.parametrize("root", ["xception-serving-bundle"])
def test_client_dependency_closure_has_no_tensorflow(root: str) -> None:
    from benchmarks import footprint

    names = footprint.dependency_closure(root)
    assert "grpcio" in names and root in names
    assert not any(n.startswith("tensorflow") for n in names)


def test_the_report_ends_with_the_bulk_phase_and_its_ratios_when_measured() -> None:
    from benchmarks import report

    mode = {
        "images": 192,
        "images_per_s": 3.78,
        "steady_images_per_s": 8.52,
        "startup_s": 20.2,
        "peak_rss_mb": 1291.0,
    }
    bulk_doc = {
        "batch_size": 8,
        "concurrency": 4,
        "in_process": mode,
        "remote": {**mode, "images": 96},
        "limit": {"images_per_s": 7.77, "images_per_s_with_decode": 7.68},
        "served": {"images_per_s": 10.43},
        "ratios": {"in_process_steady_over_limit": 1.1},
    }
    text = report.format_table({"bulk": bulk_doc})
    assert "\nbulk (batch 8, concurrency 4)\n" in text
    assert "  in_process 192 images: 3.78 img/s overall, 8.52 steady" in text
    assert "  remote     96 images:" in text
    assert "  in_process_steady_over_limit: 1.10" in text
    assert "bulk (" not in report.format_table({})


def test_format_table_shows_each_paired_round_and_their_median() -> None:
    doc = _doc()
    doc["paired"] = [{"limit": 20.0, "served": 19.5}, {"limit": 12.5, "served": 12.0}]
    doc["ratios"]["served_over_limit_paired"] = 0.967
    table = report.format_table(doc)
    assert "19.5/20.0, 12.0/12.5; median ratio 0.967" in table
    assert "back to back" not in report.format_table(_doc())  # no rounds, no line
