"""Reliability under hostile input and load, against the real server (`python -m xception_serving`)
with dynamic batching on, serving the small exported Xception (71x71).

- Bad input through the bytes, pixel and classify signatures and through REST: INVALID_ARGUMENT (or
  the code TF Serving uses) with a message naming the problem, and the server keeps serving.
- Unusual but valid images (16-bit, CMYK, animated, grey, alpha, 1xN) are answered.
- A decompression bomb is refused from its header: the server's memory does not grow.
- Isolation: bad images merged into batches with good ones fail alone.
- Load: 32 concurrent callers, zero errors, memory flat after warm-up.

Cases covered elsewhere (not repeated here): unknown model / version / label / signature
(test_server_conformance::test_predict_model_spec_errors_match_tf_serving and
test_client_local_server::test_unknown_model_version_or_label_raises_model_not_found), malformed
JSON and unknown model over REST (test_rest_local_server), a REST body above the size cap
(test_rest_server::test_oversized_body_is_refused_with_413_before_it_is_read).
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import xception_contract as contract
from PIL import Image
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from xception_client import Client, InvalidImage, ResourceExhausted, ServerUnavailable

from tests.fixtures.images import (
    gif_declaring,
    image_bytes,
    jpeg_declaring,
    photo_like,
    png_declaring,
)
from tests.fixtures.models import ExportedModel
from tests.fixtures.rpc import rpc_error
from tests.fixtures.servers import ServerProcess, start_local_server

MODEL = contract.DEFAULT_MODEL_NAME
SIZE = 71
MAX_BATCH = 8
MONITORING_CONFIG = Path(__file__).resolve().parents[2] / "serving" / "monitoring.config"
METRICS_PATH = "/monitoring/prometheus/metrics"
INVALID = grpc.StatusCode.INVALID_ARGUMENT
BOMB_SIDE = 65000  # 65000 x 65000 x 3 = 12.7 GB if decoded; each file is < 4 KiB


# -- images ------------------------------------------------------------------------------------


def _save(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _good_jpeg(seed: int = 0) -> bytes:
    return image_bytes("jpeg_baseline", 90, 120, seed=seed)


def _replace(data: bytes, marker: bytes, new: bytes) -> bytes:
    at = data.index(marker)
    return data[:at] + new + data[at + len(new) :]


def _png_bomb(side: int = BOMB_SIDE) -> bytes:
    """A valid PNG header declaring side x side RGB, and one tiny compressed row."""
    return png_declaring(side, side, zlib.compress(b"\x00" * 1024))


def _jpeg_bomb(side: int = BOMB_SIDE) -> bytes:
    return jpeg_declaring(side, side)


def _gif_bomb() -> bytes:
    return gif_declaring(65535, 65535)


def _animated_gif() -> tuple[bytes, bytes]:
    """(three-frame GIF, its first frame alone as a GIF)."""
    frames = [
        Image.fromarray(photo_like(40, 56, seed)).convert("P", palette=Image.Palette.ADAPTIVE)
        for seed in (1, 2, 3)
    ]
    animated = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80)
    return animated, _save(frames[0], "GIF")


_JPEG = _good_jpeg(7)
_NOISE = np.random.default_rng(0).integers(0, 256, size=3000, dtype=np.uint8).tobytes()

# name -> (bytes, fragment the server's message must contain)
BAD_IMAGES: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "empty image (0 bytes)"),
    "random_bytes": (_NOISE, "unsupported or undecodable image format"),
    "text_file": (b"name,score\nwolf,0.9\n" * 40, "unsupported or undecodable image format"),
    "truncated_jpeg": (_JPEG[: len(_JPEG) // 2], "Invalid JPEG data"),
    "jpeg_sos_marker_broken": (_replace(_JPEG, b"\xff\xda", b"\xff\x01"), "Invalid JPEG data"),
    "jpeg_sof_nine_components": (
        _replace(_JPEG, b"\xff\xc0", b"\xff\xc0\x00\x11\x08\x00\x5a\x00\x78\x09"),
        "Invalid JPEG data",
    ),
    "png_bomb": (_png_bomb(), "image too large"),
    "jpeg_bomb": (_jpeg_bomb(), "image too large"),
    "gif_bomb": (_gif_bomb(), "image too large"),
    "file_path_not_image": (b"/etc/hostname", "unsupported or undecodable image format"),
}

_ANIMATED, _FIRST_FRAME = _animated_gif()
UNUSUAL_IMAGES: dict[str, bytes] = {
    "1x1": _save(Image.new("RGB", (1, 1), (200, 30, 10)), "PNG"),
    "1x10000": _save(Image.fromarray(photo_like(10000, 1, seed=4)), "PNG"),
    "10000x1_jpeg": _save(Image.new("RGB", (10000, 1), (20, 130, 200)), "JPEG"),
    "png_16bit_rgb": image_bytes("png_16bit_rgb", 50, 60),
    "png_16bit_gray": image_bytes("png_16bit_gray", 50, 60),
    "jpeg_cmyk": image_bytes("jpeg_cmyk", 50, 60),
    "animated_gif": _ANIMATED,
    "jpeg_gray": image_bytes("jpeg_gray", 50, 60),
    "png_gray": image_bytes("png_l", 50, 60),
    "png_rgba": image_bytes("png_rgba", 50, 60),
    "png_gray_alpha": image_bytes("png_la", 50, 60),
    "png_palette_transparency": image_bytes("png_p_trns", 50, 60),
}


# -- requests ----------------------------------------------------------------------------------


def bytes_request(blobs: list[bytes]) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = contract.BYTES_SIGNATURE
    tensor = request.inputs[contract.IMAGE_BYTES_INPUT]
    tensor.dtype = types_pb2.DT_STRING
    tensor.tensor_shape.dim.add().size = len(blobs)
    tensor.string_val.extend(blobs)
    return request


def classify_request(blobs: list[bytes]) -> classification_pb2.ClassificationRequest:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = contract.CLASSIFY_SIGNATURE
    for blob in blobs:
        example = request.input.example_list.examples.add()
        example.features.feature[contract.EXAMPLE_IMAGE_FEATURE].bytes_list.value.append(blob)
    return request


def pixels_request(array: np.ndarray, dtype: int) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = contract.PIXELS_SIGNATURE
    tensor = request.inputs[contract.PIXELS_INPUT]
    tensor.CopyFrom(tensor_pb2.TensorProto(dtype=dtype, tensor_content=array.tobytes()))
    for size in array.shape:
        tensor.tensor_shape.dim.add().size = size
    return request


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


def top_ids(response: predict_pb2.PredictResponse) -> list[list[int]]:
    ids = response.outputs[contract.TOP_K_CLASS_IDS_OUTPUT]
    rows = ids.tensor_shape.dim[0].size
    return np.asarray(ids.int_val, dtype=np.int32).reshape(rows, -1).tolist()


def assert_still_serving(stub: Any) -> None:
    response = stub.Predict(bytes_request([_good_jpeg(1)]), timeout=60)
    assert len(top_ids(response)[0]) == 5


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_image_is_invalid_argument_naming_the_problem_on_predict_and_classify(
    stub: Any, case: str
) -> None:
    blob, fragment = BAD_IMAGES[case]
    for call, request, where in (
        (stub.Predict, bytes_request([_JPEG, blob]), f"{contract.IMAGE_BYTES_INPUT}[1]"),
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
    good = json.dumps({"instances": [{"b64": base64.b64encode(_JPEG).decode()}]}).encode()
    assert rest_call(server, f"/v1/models/{MODEL}:predict", good)[0] == 200


def test_rest_classify_with_a_bad_image_is_400_and_the_server_keeps_serving(
    server: ServerProcess, stub: Any
) -> None:
    def body(blob: bytes) -> bytes:
        example = {contract.EXAMPLE_IMAGE_FEATURE: {"b64": base64.b64encode(blob).decode()}}
        return json.dumps(
            {"signature_name": contract.CLASSIFY_SIGNATURE, "examples": [example]}
        ).encode()

    status, answer = rest_call(server, f"/v1/models/{MODEL}:classify", body(_NOISE))
    assert status == 400 and "unsupported or undecodable" in answer["error"]
    status, answer = rest_call(server, f"/v1/models/{MODEL}:classify", body(_JPEG))
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
    response = stub.Predict(bytes_request([_ANIMATED, _FIRST_FRAME]), timeout=60)
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
        for blob in (_png_bomb(), _jpeg_bomb(), _gif_bomb()):
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
    error = rpc_error(stub.Predict, bytes_request([_JPEG] * (MAX_BATCH + 1)))
    assert (error.code(), error.details()) == (
        INVALID,
        f"Task size {MAX_BATCH + 1} is larger than maximum input batch size {MAX_BATCH}",
    )
    response = stub.Predict(bytes_request([_JPEG] * MAX_BATCH), timeout=60)
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


# -- the client rejects what it can before sending ---------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "random_bytes",
        "text_file",
        "jpeg_sos_marker_broken",
        "jpeg_sof_nine_components",
        "png_bomb",
        "jpeg_bomb",
        "gif_bomb",
        "file_path_not_image",
    ],
)
def test_client_rejects_bad_images_before_sending(case: str) -> None:
    # Nothing listens on port 1: a request that left the client would fail as unavailable.
    data = BAD_IMAGES[case][0]
    with Client("127.0.0.1:1", timeout=5, retries=0) as client, pytest.raises(InvalidImage) as info:
        client.predict(data)
    assert info.value.code is None  # a local check, not a server answer
    if case == "empty":
        assert info.value.details == "image <bytes> is empty (0 bytes)"
    elif case.endswith("_bomb"):
        side = 65535 if case == "gif_bomb" else BOMB_SIDE
        # The client's words, then Pillow's bomb check naming the declared pixel count.
        assert info.value.details.startswith(
            f"image <bytes> declares too many pixels (Image size ({side * side} pixels) exceeds"
        ), info.value.details
    else:  # Pillow cannot open it (the broken JPEGs too): the size and first bytes, for a log
        assert info.value.details == (
            f"image <bytes> is not in a known image format ({len(data)} bytes,"
            f" starting {data[:8].hex(' ')})"
        )


def test_client_rejects_empty_batch_and_off_size_pixels_before_sending() -> None:
    with Client("127.0.0.1:1", timeout=5, retries=0) as client:
        with pytest.raises(ValueError, match="images is empty"):
            client.predict_batch([])
        with pytest.raises(ServerUnavailable) as info:
            client.predict(_JPEG)  # the control: a good image does try to reach the server
        assert "127.0.0.1:1: Failed to connect to remote host: Connection refused" in (
            info.value.details
        ), info.value.details
    pixels = Client("127.0.0.1:1", timeout=5, retries=0, signature=contract.PIXELS_SIGNATURE)
    with pixels, pytest.raises(InvalidImage, match="model's size"):
        pixels.predict_batch(
            [np.zeros((SIZE, SIZE, 3), np.uint8), np.zeros((SIZE + 1, SIZE, 3), np.uint8)]
        )


def test_request_above_the_message_limit_is_refused_by_the_client_with_a_clear_error(
    server: ServerProcess, stub: Any
) -> None:
    noise = np.random.default_rng(3).integers(0, 256, size=(400, 400, 3), dtype=np.uint8)
    large = _save(Image.fromarray(noise), "PNG")  # ~480 KB, incompressible
    limit = 256 * 1024
    with Client(
        server.grpc_target, timeout=30, channel_options=[("grpc.max_send_message_length", limit)]
    ) as client:
        with pytest.raises(ResourceExhausted) as info:
            client.predict(large)
        assert "larger than max" in info.value.details
        assert str(limit) in info.value.details
        # Small requests still go through on the same channel.
        assert len(client.predict(_JPEG)) == contract.DEFAULT_TOP_K
    assert_still_serving(stub)


# -- isolation ---------------------------------------------------------------------------------


def test_bad_image_in_a_shared_batch_fails_alone(server: ServerProcess, stub: Any) -> None:
    good = [_good_jpeg(seed) for seed in range(10, 16)]
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
    for index, ids in good_results:  # type: ignore[misc]
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
    images = [_good_jpeg(seed) for seed in range(20, 28)]
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
