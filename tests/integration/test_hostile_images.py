"""Hostile images whose decode cost does not follow their pixel count are refused inside the
exported graph, before the expensive decode, with INVALID_ARGUMENT naming the cause and the export
flag that bounds it (so TF Serving, running the same graph, refuses them too); legitimate images
of the same kinds still decode exactly as Keras's load_img does.

Time bounds are generous on purpose: each refusal was measured at 2-90 ms here (a bomb's full
decode takes seconds); the bound is 5 s, far from both, so a loaded machine cannot flake it.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xception_contract as contract

from benchmarks.decode_cost import (
    gif_extension_bomb,
    gif_join,
    gif_junk_after_image,
    gif_photo,
    gif_small,
    gif_split,
    gif_split_irregular,
    gif_sub_block_bomb,
    graph_preprocessing,
    jpeg_photo,
    jpeg_scan_bomb,
    png_photo,
    png_ztxt_bomb,
)
from tests.fixtures.images import image_bytes
from tests.fixtures.models import ExportedModel, bytes_signature_caller

REFUSAL_SECONDS = 5.0  # measured 0.002-0.09 s; see the module docstring
INPUT_TOLERANCE = 1.2e-7  # the parity suite's: one float32 ulp near 1 (measured: 0)

JPEG_SCANS = (
    f"JPEG has more than --max-jpeg-scans={contract.DEFAULT_MAX_JPEG_SCANS} scans "
    "(each progressive scan is one more pass over the whole image)"
)
GIF_BLOCKS = (
    f"GIF has more than --max-gif-blocks={contract.DEFAULT_MAX_GIF_BLOCKS} blocks "
    "(extensions and their sub-blocks) before its first image"
)
PNG_TEXTS = (
    f"PNG has more than --max-png-text-chunks={contract.DEFAULT_MAX_PNG_TEXT_CHUNKS} "
    "compressed text chunks (zTXt, iTXt: each is inflated, up to 8 MB)"
)


@pytest.fixture(scope="module")
def bytes_signature(small_xception_model: ExportedModel) -> Any:
    call = bytes_signature_caller(small_xception_model.version_dir)

    call([image_bytes("png_rgb", 20, 20)])  # the first run's set-up is not the refusal's time
    return call


@pytest.fixture(scope="module")
def graph_preprocess() -> Any:
    """The export's in-graph preprocessing at the default limits (71x71, nearest)."""
    import tensorflow as tf
    from xception_export.preprocess import DEFAULT_LIMITS

    run = graph_preprocessing(DEFAULT_LIMITS)
    return lambda batch: np.asarray(run(tf.constant(batch)))


def keras_input(data: bytes) -> np.ndarray:
    import keras

    image = keras.utils.load_img(io.BytesIO(data), target_size=(71, 71))
    pixels = np.array(image, dtype="float32")
    return np.asarray(keras.applications.xception.preprocess_input(pixels))


def _refused_quickly(call: Any, data: bytes, assertion: str) -> None:
    import tensorflow as tf

    started = time.perf_counter()
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        call([image_bytes("png_rgb", 20, 20), data])
    seconds = time.perf_counter() - started
    assert f"assertion failed: [image_bytes[1]:] [{assertion}]" in info.value.message
    assert seconds < REFUSAL_SECONDS


@pytest.mark.parametrize(
    ("make", "assertion"),
    [
        (lambda: jpeg_scan_bomb(64, 200), JPEG_SCANS),
        (lambda: gif_sub_block_bomb(100_000), GIF_BLOCKS),
        (lambda: gif_extension_bomb(100_000), GIF_BLOCKS),
        (lambda: png_ztxt_bomb(png_photo(64), 40), PNG_TEXTS),
    ],
    ids=["jpeg-200-repeated-scans", "gif-100k-sub-blocks", "gif-100k-extensions", "png-40-ztxt"],
)
def test_bytes_signature_refuses_a_decode_cost_bomb_quickly_naming_cause_and_limit(
    bytes_signature: Any, make: Any, assertion: str
) -> None:
    _refused_quickly(bytes_signature, make(), assertion)


def test_images_at_each_limit_still_decode(graph_preprocess: Any) -> None:
    at_limits = [
        jpeg_scan_bomb(64, contract.DEFAULT_MAX_JPEG_SCANS - 10),  # Pillow writes 10 scans
        gif_sub_block_bomb(contract.DEFAULT_MAX_GIF_BLOCKS - 2),  # + introducer + terminator
        png_ztxt_bomb(png_photo(64), contract.DEFAULT_MAX_PNG_TEXT_CHUNKS, expands_to=1000),
    ]
    assert graph_preprocess(at_limits).shape == (3, 71, 71, 3)


def test_legit_progressive_jpeg_and_gifs_keep_exact_parity_with_keras(
    graph_preprocess: Any,
) -> None:
    gif = gif_photo(97)
    images = [
        jpeg_photo(131, progressive=True),
        gif_photo(97, frames=3),  # load_img shows the first frame
        gif,
        gif_split(gif),  # its image data in one-byte sub-blocks: same pixels
        gif_split_irregular(gif),  # in 1- and 2-byte sub-blocks in turn: same pixels
    ]
    got = graph_preprocess(images)
    want = np.stack([keras_input(data) for data in images])
    assert np.abs(got - want).max() <= INPUT_TOLERANCE
    assert np.array_equal(got[2], got[3]) and np.array_equal(got[2], got[4])


def test_gif_split_into_one_byte_sub_blocks_decodes_about_as_fast_as_its_usual_framing(
    graph_preprocess: Any,
) -> None:
    # 1000x1000: ~0.8 MB of LZW data, 800k one-byte sub-blocks. A walk of one loop step per
    # sub-block took ~17 s (~21 us a step); the strided skip of equal sub-blocks keeps it near
    # the usual framing. The bound is a generous ratio plus a floor, not a close timing.
    gif = gif_photo(1000)
    split = gif_split(gif)
    graph_preprocess([gif])  # warm
    started = time.perf_counter()
    graph_preprocess([gif])
    usual = time.perf_counter() - started
    started = time.perf_counter()
    graph_preprocess([split])
    one_byte = time.perf_counter() - started
    assert one_byte < 20 * usual + 2.0


def test_gif_junk_after_the_first_frame_s_data_is_cut_unwalked_and_decodes_as_keras(
    graph_preprocess: Any,
) -> None:
    # 8 MB of 1- and 2-byte sub-blocks after a 1x1 frame's data: the decoder never reads them,
    # and the walk stops 64 KB past what the frame can need, so the cost follows the pixels
    # (measured 0.004 s; a walk to the end of the chain took ~0.9 s, one step a sub-block ~70 s).
    tiny = gif_join(gif_small())
    junk = gif_junk_after_image(tiny, 8 << 20)
    got = graph_preprocess([tiny])
    started = time.perf_counter()
    with_junk = graph_preprocess([junk])
    seconds = time.perf_counter() - started
    assert np.array_equal(with_junk, got)
    assert np.abs(got[0] - keras_input(junk)).max() <= INPUT_TOLERANCE
    assert seconds < REFUSAL_SECONDS


def test_limits_are_in_the_metadata_and_at_the_top_of_inspect(
    small_xception_model: ExportedModel,
) -> None:
    from xception_export import inspection, normalization

    info = inspection.describe(small_xception_model.version_dir)
    meta = info["metadata"]
    assert meta["max_jpeg_scans"] == contract.DEFAULT_MAX_JPEG_SCANS
    assert meta["max_gif_blocks"] == contract.DEFAULT_MAX_GIF_BLOCKS
    assert meta["max_png_text_chunks"] == contract.DEFAULT_MAX_PNG_TEXT_CHUNKS
    lines = inspection.format_text(info).splitlines()
    assert lines[1:4] == [
        "Input: 71x71 (height x width) RGB",
        f"Preprocess baked in: tf = {normalization.DESCRIPTIONS['tf']}",
        "Decode limits (refused with INVALID_ARGUMENT): "
        f"--max-pixels={contract.DEFAULT_MAX_PIXELS} "
        f"--max-jpeg-scans={contract.DEFAULT_MAX_JPEG_SCANS} "
        f"--max-gif-blocks={contract.DEFAULT_MAX_GIF_BLOCKS} "
        f"--max-png-text-chunks={contract.DEFAULT_MAX_PNG_TEXT_CHUNKS}",
    ]


def test_export_flags_set_the_limits_the_graph_enforces(
    small_xception_weights: Path, tmp_path: Path
) -> None:
    import tensorflow as tf
    from xception_export import cli, inspection

    base = tmp_path / "limited"
    argv = [
        "--weights", str(small_xception_weights), "--image-size", "71",
        "--max-jpeg-scans", "12", "--max-gif-blocks", "5", "--max-png-text-chunks", "1",
        "--model-base-path", str(base),
    ]  # fmt: skip
    assert cli.main(argv) == 0
    meta = inspection.describe(base / "1")["metadata"]
    assert (meta["max_jpeg_scans"], meta["max_gif_blocks"], meta["max_png_text_chunks"]) == (
        12,
        5,
        1,
    )
    signature = tf.saved_model.load(str(base / "1")).signatures[contract.BYTES_SIGNATURE]

    def call(batch: list[bytes]) -> Any:
        return signature(**{contract.IMAGE_BYTES_INPUT: tf.constant(batch)})

    assert call([jpeg_scan_bomb(32, 2)])[contract.PROBABILITIES_OUTPUT].shape == (1, 1000)
    _refused_quickly(call, jpeg_scan_bomb(32, 3), JPEG_SCANS.replace("=32 ", "=12 "))
    _refused_quickly(call, gif_sub_block_bomb(4), GIF_BLOCKS.replace("=1024 ", "=5 "))
    _refused_quickly(call, png_ztxt_bomb(png_photo(32), 2, 1000), PNG_TEXTS.replace("=8 ", "=1 "))


@pytest.mark.parametrize("flag", ["--max-jpeg-scans", "--max-gif-blocks", "--max-png-text-chunks"])
@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_limit_flags_reject_a_non_positive_value_echoing_it(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from xception_export import cli

    with pytest.raises(SystemExit) as info:
        cli.main([flag, value])
    assert info.value.code == 2
    assert f"argument {flag}: expected a positive integer, got {value!r}" in capsys.readouterr().err


def test_export_api_rejects_a_non_positive_limit_echoing_it(tmp_path: Path) -> None:
    from xception_export.api import export
    from xception_export.errors import UsageError
    from xception_export.preprocess import DecodeLimits

    with pytest.raises(UsageError) as info:
        export(tmp_path / "m", weights="random", limits=DecodeLimits(max_gif_blocks=0))
    assert (
        str(info.value)
        == "--max-gif-blocks must be a positive integer. Received: --max-gif-blocks=0"
    )
    assert not (tmp_path / "m").exists()


def test_served_bombs_are_refused_over_grpc_and_the_next_good_call_is_answered(
    xception_server: Any, small_xception_model: ExportedModel
) -> None:
    # Through the local server (a TF1 Session on the same graph, as TF Serving runs it): before
    # the limits the scan bomb kept a server decoding for ~34 s and delayed the next call.
    import grpc
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    def request(data: bytes) -> Any:
        message = predict_pb2.PredictRequest()
        message.model_spec.name = contract.DEFAULT_MODEL_NAME
        images = message.inputs[contract.IMAGE_BYTES_INPUT]
        images.dtype = types_pb2.DT_STRING
        images.tensor_shape.dim.add().size = 1
        images.string_val.append(data)
        return message

    with grpc.insecure_channel(xception_server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for bomb, assertion in (
            (jpeg_scan_bomb(512, 2000), JPEG_SCANS),
            (gif_sub_block_bomb(100_000), GIF_BLOCKS),
            (png_ztxt_bomb(png_photo(64), 40), PNG_TEXTS),
        ):
            started = time.perf_counter()
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(request(bomb), timeout=60)
            assert time.perf_counter() - started < REFUSAL_SECONDS
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            first_line = info.value.details().split("\n")[0]
            assert first_line == f"assertion failed: [image_bytes[0]:] [{assertion}]"
        started = time.perf_counter()
        answer = stub.Predict(request(jpeg_photo(200)), timeout=60)
        assert time.perf_counter() - started < REFUSAL_SECONDS
    probabilities = answer.outputs[contract.PROBABILITIES_OUTPUT].float_val
    assert len(probabilities) == small_xception_model.num_classes
