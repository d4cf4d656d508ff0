"""Reliability under hostile input and load, against the real server (`python -m xception_serving`)
with dynamic batching on, serving the small exported Xception (71x71).

- Bad input through the bytes, pixel and classify signatures and through REST: INVALID_ARGUMENT (or
  the code TF Serving uses) with a message naming the problem, and the server keeps serving.
- Unusual but valid images (16-bit, CMYK, animated, grey, alpha, 1xN) are answered.
- A decompression bomb is refused from its header: the server's memory does not grow.
- Isolation: bad images merged into batches with good ones fail alone.
- Load: 32 concurrent callers, zero errors, memory flat after warm-up.

The inputs and requests are in tests/fixtures/reliability.py; what the client refuses before
sending is in test_reliability_inputs_client.py.

Cases covered elsewhere (not repeated here): unknown model / version / label / signature
(test_server_conformance::test_predict_model_spec_errors_match_tf_serving and
test_client_local_server::test_unknown_model_version_or_label_raises_model_not_found), malformed
JSON and unknown model over REST (test_rest_local_server), a REST body above the size cap
(test_rest_server::test_oversized_body_is_refused_with_413_before_it_is_read).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import xception_contract as contract
from PIL import Image
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from xception_client import Client, ResourceExhausted
from xception_serving.testing.process import ServerProcess

from tests.fixtures.models import ExportedModel
from tests.fixtures.reliability import (
    ANIMATED_GIF,
    BAD_IMAGES,
    FIRST_FRAME,
    INVALID,
    JPEG,
    MAX_BATCH,
    MODEL,
    NOISE,
    SIZE,
    UNUSUAL_IMAGES,
    assert_still_serving,
    bytes_request,
    classify_request,
    gif_bomb,
    good_jpeg,
    jpeg_bomb,
    pixels_request,
    png_bomb,
    saved_bytes,
    top_ids,
)
from tests.fixtures.rpc import rpc_error
from tests.fixtures.servers import start_local_server

MONITORING_CONFIG = Path(__file__).resolve().parents[2] / "serving" / "monitoring.config"
METRICS_PATH = "/monitoring/prometheus/metrics"


# -- observing the server ----------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status (VmRSS, KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def rest_call(server: ServerProcess, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    assert server.rest_url is not None
    request = urllib.request.Request(server.rest_url + path, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def metric_total(server: ServerProcess, family: str, suffix: str) -> float:
    """Sum of one Prometheus family's `<family><suffix>` samples (e.g. `_sum`, `_count`)."""
    assert server.rest_url is not None
    with urllib.request.urlopen(server.rest_url + METRICS_PATH, timeout=30) as response:
        text = response.read().decode()
    pattern = re.compile(rf"^{re.escape(family + suffix)}(?:\{{[^}}]*\}})?\s+(\S+)$")
    return sum(float(m[1]) for line in text.splitlines() if (m := pattern.match(line)))


# -- the server --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(
    small_xception_model: ExportedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    config = tmp_path_factory.mktemp("batching") / "batching.config"
    # A 20 ms window so concurrent callers really share batches; a deep queue so 32 callers
    # never see "queue is full" (that is load shedding, not what these tests measure).
    config.write_text(
        f"max_batch_size {{ value: {MAX_BATCH} }}\n"
        "batch_timeout_micros { value: 20000 }\n"
        "max_enqueued_batches { value: 100 }\n"
        "num_batch_threads { value: 2 }\n"
    )
    with start_local_server(
        model_name=MODEL,
        model_base_path=Path(small_xception_model.base_path),
        rest=True,
        extra_args=[
            "--enable_batching",
            f"--batching_parameters_file={config}",
            f"--monitoring_config_file={MONITORING_CONFIG}",
        ],
    ) as running:
        yield running


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_image_is_invalid_argument_naming_the_problem_on_predict_and_classify(
    stub: Any, case: str
) -> None:
    blob, fragment = BAD_IMAGES[case]
    for call, request, where in (
        (stub.Predict, bytes_request([JPEG, blob]), f"{contract.IMAGE_BYTES_INPUT}[1]"),
        (stub.Classify, classify_request([blob]), ""),
    ):
        error = rpc_error(call, request)
        assert error.code() == INVALID, error.details()
        assert fragment in error.details()
        if where and "image" in fragment:  # the graph's own checks name the failing image
            assert where in error.details()
        assert_still_serving(stub)


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_image_over_rest_is_400_naming_the_problem(
    server: ServerProcess, stub: Any, case: str
) -> None:
    blob, fragment = BAD_IMAGES[case]
    body = json.dumps({"instances": [{"b64": base64.b64encode(blob).decode()}]}).encode()
    status, answer = rest_call(server, f"/v1/models/{MODEL}:predict", body)
    assert status == 400, answer
    assert fragment in answer["error"]
    good = json.dumps({"instances": [{"b64": base64.b64encode(JPEG).decode()}]}).encode()
    assert rest_call(server, f"/v1/models/{MODEL}:predict", good)[0] == 200


def test_rest_classify_with_a_bad_image_is_400_and_the_server_keeps_serving(
    server: ServerProcess, stub: Any
) -> None:
    def body(blob: bytes) -> bytes:
        example = {contract.EXAMPLE_IMAGE_FEATURE: {"b64": base64.b64encode(blob).decode()}}
        return json.dumps(
            {"signature_name": contract.CLASSIFY_SIGNATURE, "examples": [example]}
        ).encode()

    status, answer = rest_call(server, f"/v1/models/{MODEL}:classify", body(NOISE))
    assert status == 400 and "unsupported or undecodable" in answer["error"]
    status, answer = rest_call(server, f"/v1/models/{MODEL}:classify", body(JPEG))
    assert status == 200 and len(answer["results"][0]) == 1000


@pytest.mark.parametrize("case", sorted(UNUSUAL_IMAGES))
def test_unusual_but_valid_image_is_classified(stub: Any, case: str) -> None:
    response = stub.Predict(bytes_request([UNUSUAL_IMAGES[case]]), timeout=60)
    probabilities = np.asarray(response.outputs[contract.PROBABILITIES_OUTPUT].float_val)
    assert probabilities.shape == (1000,)
    assert abs(probabilities.sum() - 1.0) < 1e-3
    classified = stub.Classify(classify_request([UNUSUAL_IMAGES[case]]), timeout=60)
    scores = [c.score for c in classified.result.classifications[0].classes]
    np.testing.assert_allclose(scores, probabilities, atol=1e-6)


def test_animated_gif_is_classified_by_its_first_frame(stub: Any) -> None:
    response = stub.Predict(bytes_request([ANIMATED_GIF, FIRST_FRAME]), timeout=60)
    probabilities = np.asarray(response.outputs[contract.PROBABILITIES_OUTPUT].float_val).reshape(
        2, -1
    )
    np.testing.assert_allclose(probabilities[0], probabilities[1], atol=1e-6)


def test_decompression_bombs_are_refused_without_allocating(
    server: ServerProcess, stub: Any
) -> None:
    assert_still_serving(stub)  # steady state first: the model's own buffers are allocated
    before = rss_kib(server.process.pid)
    for _ in range(3):
        for blob in (png_bomb(), jpeg_bomb(), gif_bomb()):
            assert len(blob) < 4096
            error = rpc_error(stub.Predict, bytes_request([blob]))
            assert error.code() == INVALID and "image too large" in error.details()
    grown_mib = (rss_kib(server.process.pid) - before) / 1024
    # A decode would need 12.7 GB per image; allow only allocator noise.
    assert grown_mib < 100, f"server RSS grew {grown_mib:.0f} MiB"
    assert_still_serving(stub)


def _shape_refusal(shape: tuple[int, ...]) -> str:
    """The graph's EnsureShape refusal of a pixel tensor, naming the shape that was sent and the
    one the signature takes, then the node (TensorFlow's words, as a Session reports them)."""
    sent = re.escape(",".join(str(d) for d in shape))
    return (
        rf"Shape of tensor \S+ \[{sent}\] is not compatible with expected shape "
        rf"\[\?,{SIZE},{SIZE},3\]\.\n\t \[\[(?:\{{\{{function_node \w+\}}\}})?"
        r"\{\{node EnsureShape\}\}\]\]"
    )


@pytest.mark.parametrize(
    ("array", "dtype", "message"),
    [
        pytest.param(
            np.zeros((1, SIZE, SIZE, 3), np.float32),
            types_pb2.DT_FLOAT,
            re.escape("Expects arg[0] to be uint8 but float is provided"),
            id="float_for_uint8",
        ),
        pytest.param(
            np.zeros((1, SIZE, SIZE, 4), np.uint8),
            types_pb2.DT_UINT8,
            _shape_refusal((1, SIZE, SIZE, 4)),
            id="four_channels",
        ),
        pytest.param(
            np.zeros((1, SIZE - 1, SIZE - 1, 3), np.uint8),
            types_pb2.DT_UINT8,
            _shape_refusal((1, SIZE - 1, SIZE - 1, 3)),
            id="wrong_image_size",
        ),
        pytest.param(
            np.zeros((1, SIZE, SIZE), np.uint8),
            types_pb2.DT_UINT8,
            _shape_refusal((1, SIZE, SIZE)),
            id="missing_channel_axis",
        ),
    ],
)
def test_pixel_tensor_of_wrong_dtype_or_shape_is_invalid_argument(
    stub: Any, array: np.ndarray, dtype: int, message: str
) -> None:
    error = rpc_error(stub.Predict, pixels_request(array, dtype))
    assert error.code() == INVALID, error.details()
    assert re.fullmatch(message, error.details()), error.details()
    ok = stub.Predict(
        pixels_request(np.full((1, SIZE, SIZE, 3), 90, np.uint8), types_pb2.DT_UINT8), timeout=60
    )
    assert len(top_ids(ok)[0]) == 5


def test_empty_batch_is_invalid_argument_on_every_signature(stub: Any) -> None:
    error = rpc_error(stub.Predict, bytes_request([]))
    assert error.code() == INVALID and "empty batch" in error.details(), error.details()
    empty_pixels = np.zeros((0, SIZE, SIZE, 3), np.uint8)
    error = rpc_error(stub.Predict, pixels_request(empty_pixels, types_pb2.DT_UINT8))
    assert error.code() == INVALID and "empty batch" in error.details(), error.details()
    error = rpc_error(stub.Classify, classify_request([]))
    assert (error.code(), error.details()) == (INVALID, "Input is empty.")
    assert_still_serving(stub)


def test_batch_above_the_server_maximum_is_refused_and_the_maximum_is_served(stub: Any) -> None:
    error = rpc_error(stub.Predict, bytes_request([JPEG] * (MAX_BATCH + 1)))
    assert (error.code(), error.details()) == (
        INVALID,
        f"Task size {MAX_BATCH + 1} is larger than maximum input batch size {MAX_BATCH}",
    )
    response = stub.Predict(bytes_request([JPEG] * MAX_BATCH), timeout=60)
    assert len(top_ids(response)) == MAX_BATCH


@pytest.mark.parametrize(
    "method",
    [
        "/tensorflow.serving.PredictionService/Predict",
        "/tensorflow.serving.PredictionService/Classify",
        "/tensorflow.serving.PredictionService/GetModelMetadata",
        "/tensorflow.serving.ModelService/GetModelStatus",
    ],
)
def test_malformed_protobuf_bytes_are_refused_and_the_server_keeps_serving(
    server: ServerProcess, stub: Any, method: str
) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        raw = channel.unary_unary(
            method, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        # An unterminated varint, a field with a length past the end, a bad wire type.
        for blob in (b"\xff\xff\xff", b"\x0a\x7fshort", b"\x0f\x01"):
            error = rpc_error(raw, blob, timeout=30)
            # gRPC's own answer to an unparsable message (TF Serving's C++ server: INTERNAL too).
            assert error.code() == grpc.StatusCode.INTERNAL, error.details()
            assert "deserializ" in str(error.details()).lower()
    assert_still_serving(stub)


def test_request_above_the_message_limit_is_refused_by_the_client_with_a_clear_error(
    server: ServerProcess, stub: Any
) -> None:
    noise = np.random.default_rng(3).integers(0, 256, size=(400, 400, 3), dtype=np.uint8)
    large = saved_bytes(Image.fromarray(noise), "PNG")  # ~480 KB, incompressible
    limit = 256 * 1024
    with Client(
        server.grpc_target, timeout=30, channel_options=[("grpc.max_send_message_length", limit)]
    ) as client:
        with pytest.raises(ResourceExhausted) as info:
            client.predict(large)
        assert "larger than max" in info.value.details
        assert str(limit) in info.value.details
        # Small requests still go through on the same channel.
        assert len(client.predict(JPEG)) == contract.DEFAULT_TOP_K
    assert_still_serving(stub)


# -- isolation ---------------------------------------------------------------------------------


def test_bad_image_in_a_shared_batch_fails_alone(server: ServerProcess, stub: Any) -> None:
    good = [good_jpeg(seed) for seed in range(10, 16)]
    expected = top_ids(stub.Predict(bytes_request(good), timeout=60))
    merged_before = (
        metric_total(server, ":tensorflow:serving:batching:input_batch_size", "_sum"),
        metric_total(server, ":tensorflow:serving:batching:input_batch_size", "_count"),
    )
    callers, rounds = 6, 5
    barrier = threading.Barrier(callers + 1)
    good_results: list[tuple[int, list[int]] | str] = []
    bad_codes: list[grpc.StatusCode] = []
    lock = threading.Lock()

    def good_caller(index: int) -> None:
        barrier.wait(30)
        for _ in range(rounds):
            try:
                ids = top_ids(stub.Predict(bytes_request([good[index]]), timeout=60))[0]
                outcome: tuple[int, list[int]] | str = (index, ids)
            except grpc.RpcError as error:
                outcome = f"{error.code()}: {error.details()}"
            with lock:
                good_results.append(outcome)

    def bad_caller() -> None:
        barrier.wait(30)
        for i in range(rounds):
            blob = list(BAD_IMAGES.values())[i % len(BAD_IMAGES)][0]
            try:
                stub.Predict(bytes_request([blob]), timeout=60)
                code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = error.code()
            with lock:
                bad_codes.append(code)

    threads = [threading.Thread(target=good_caller, args=(i,)) for i in range(callers)]
    threads.append(threading.Thread(target=bad_caller))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    failures = [r for r in good_results if isinstance(r, str)]
    assert failures == [] and len(good_results) == callers * rounds
    for index, ids in [r for r in good_results if not isinstance(r, str)]:
        assert ids == expected[index]  # each caller got its own image's answer
    assert bad_codes == [INVALID] * rounds
    batch_sum = metric_total(server, ":tensorflow:serving:batching:input_batch_size", "_sum")
    batch_count = metric_total(server, ":tensorflow:serving:batching:input_batch_size", "_count")
    # Batching really merged requests during the run (mean batch size above one).
    assert (batch_sum - merged_before[0]) > (batch_count - merged_before[1])


# -- load --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_32_concurrent_callers_get_no_errors_and_memory_stays_flat(
    server: ServerProcess,
) -> None:
    callers, warmup_rounds, rounds = 32, 3, 10
    images = [good_jpeg(seed) for seed in range(20, 28)]
    with Client(server.grpc_target, timeout=120) as client:
        expected = [[p.class_id for p in r] for r in client.predict_batch(images)]

        def run(rounds_each: int) -> list[str]:
            def caller(index: int) -> list[str]:
                problems = []
                for i in range(rounds_each):
                    image = (index + i) % len(images)
                    try:
                        got = [p.class_id for p in client.predict(images[image])]
                    except Exception as error:  # every failure counts as an error
                        problems.append(repr(error))
                        continue
                    if got != expected[image]:
                        problems.append(f"image {image}: {got} != {expected[image]}")
                return problems

            with ThreadPoolExecutor(callers) as pool:
                return [p for problems in pool.map(caller, range(callers)) for p in problems]

        assert run(warmup_rounds) == []
        after_warmup = rss_kib(server.process.pid)
        started = time.monotonic()
        errors = run(rounds)
        elapsed = time.monotonic() - started
        after_run = rss_kib(server.process.pid)
    assert errors == [], f"{len(errors)} errors, first: {errors[0]}"
    growth = (after_run - after_warmup) / after_warmup
    print(
        f"load: {callers * rounds} requests from {callers} callers in {elapsed:.1f} s "
        f"({callers * rounds / elapsed:.1f} req/s); RSS after warm-up {after_warmup / 1024:.0f} "
        f"MiB, after run {after_run / 1024:.0f} MiB ({growth:+.1%})"
    )
    assert abs(growth) <= 0.10
