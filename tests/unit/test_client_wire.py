"""The client's own messages are wire-compatible with tensorflow-serving-api, byte for byte."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xception_contract as contract
from google.protobuf import any_pb2
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)
from xception_client import _wire
from xception_client._proto import serving_pb2

CLIENT = Path(__file__).resolve().parents[2] / "client"
PROTO_DIR = CLIENT / "src" / "xception_client" / "_proto"
# What the client ships in _proto: the two .proto files and the modules generated from them.
PROTO_FILES = ("serving.proto", "tensorflow.proto")
GENERATED_MODULES = ("serving_pb2.py", "tensorflow_pb2.py")
JPEG_LIKE = [b"\xff\xd8\xff\xe0first", b"\x89PNG\r\n\x1a\nsecond", b""]


def _official_spec(
    name: str, *, version: int | None = None, label: str | None = None, signature: str = ""
) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=name, signature_name=signature)
    if version is not None:
        spec.version.value = version
    if label is not None:
        spec.version_label = label
    return spec


@pytest.mark.parametrize(
    ("version", "label"), [(None, None), (7, None), (0, None), (None, "stable")]
)
def test_bytes_predict_request_equals_tensorflow_serving_api_bytes(
    version: int | None, label: str | None
) -> None:
    model = _wire.ModelRef("xception", version, label, contract.BYTES_SIGNATURE)
    ours = _wire.predict_bytes_request(model, JPEG_LIKE).SerializeToString()

    official = predict_pb2.PredictRequest(
        model_spec=_official_spec(
            "xception", version=version, label=label, signature=contract.BYTES_SIGNATURE
        )
    )
    tensor = official.inputs[contract.IMAGE_BYTES_INPUT]
    tensor.dtype = types_pb2.DT_STRING
    tensor.tensor_shape.dim.add().size = len(JPEG_LIKE)
    tensor.string_val.extend(JPEG_LIKE)
    assert ours == official.SerializeToString()


def test_pixel_predict_request_equals_make_tensor_proto_bytes() -> None:
    import tensorflow as tf

    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    model = _wire.ModelRef("m", 3, None, contract.PIXELS_SIGNATURE)
    ours = _wire.predict_pixels_request(model, pixels, [contract.TOP_K_SCORES_OUTPUT])

    official = predict_pb2.PredictRequest(
        model_spec=_official_spec("m", version=3, signature=contract.PIXELS_SIGNATURE),
        output_filter=[contract.TOP_K_SCORES_OUTPUT],
    )
    official.inputs[contract.PIXELS_INPUT].CopyFrom(tf.make_tensor_proto(pixels))
    assert ours.SerializeToString() == official.SerializeToString()


def test_metadata_and_status_requests_equal_tensorflow_serving_api_bytes() -> None:
    model = _wire.ModelRef("xception", 2, None, contract.BYTES_SIGNATURE)
    official_meta = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=_official_spec("xception", version=2), metadata_field=["signature_def"]
    )
    official_status = get_model_status_pb2.GetModelStatusRequest(
        model_spec=_official_spec("xception", version=2)
    )
    assert _wire.metadata_request(model).SerializeToString() == official_meta.SerializeToString()
    assert _wire.status_request(model).SerializeToString() == official_status.SerializeToString()


def _official_top_k_response(keys: bool, as_content: bool) -> predict_pb2.PredictResponse:
    import tensorflow as tf

    response = predict_pb2.PredictResponse(model_spec=_official_spec("xception", version=4))
    scores = np.array([[0.5, 0.3, 0.1], [0.9, 0.05, 0.01]], dtype=np.float32)
    ids = np.array([[3, 1, 2], [0, 2, 1]], dtype=np.int32)
    labels = np.array([[b"cat", b"dog", b"fox"], [b"ant", b"fox", b"dog"]], dtype=object)
    outputs = {
        contract.TOP_K_SCORES_OUTPUT: scores,
        contract.TOP_K_CLASS_IDS_OUTPUT: ids,
        contract.TOP_K_LABELS_OUTPUT: labels,
        contract.PROBABILITIES_OUTPUT: np.full((2, 4), 0.25, dtype=np.float32),
    }
    if keys:
        outputs[contract.TOP_K_KEYS_OUTPUT] = np.array(
            [[b"n3", b"n1", b"n2"], [b"n0", b"n2", b"n1"]], dtype=object
        )
    for alias, value in outputs.items():
        if as_content or value.dtype == object:
            response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
        else:  # TF Serving's default: typed repeated fields (AsProtoField)
            tensor = response.outputs[alias]
            tensor.dtype = tf.as_dtype(value.dtype).as_datatype_enum
            for d in value.shape:
                tensor.tensor_shape.dim.add().size = d
            field = "float_val" if value.dtype == np.float32 else "int_val"
            getattr(tensor, field).extend(value.ravel().tolist())
    return response


@pytest.mark.parametrize("as_content", [False, True], ids=["typed-fields", "tensor-content"])
@pytest.mark.parametrize("keys", [True, False], ids=["with-keys", "without-keys"])
def test_predict_response_serialized_by_tensorflow_serving_api_parses(
    keys: bool, as_content: bool
) -> None:
    data = _official_top_k_response(keys, as_content).SerializeToString()
    parsed = _wire.PREDICT.deserializer(data)
    top = _wire.parse_top_k(parsed, 2)
    assert [[(p.label, p.class_id) for p in image] for image in top] == [
        [("cat", 3), ("dog", 1)],
        [("ant", 0), ("fox", 2)],
    ]
    assert top[0][0].score == pytest.approx(0.5)
    assert top[1][1].key == ("n2" if keys else None)
    np.testing.assert_array_equal(_wire.parse_probabilities(parsed), np.full((2, 4), 0.25))


def test_top_k_above_exported_k_raises_top_k_too_large() -> None:
    from xception_client import TopKTooLarge

    parsed = _wire.PREDICT.deserializer(_official_top_k_response(True, False).SerializeToString())
    with pytest.raises(TopKTooLarge, match=r"top_k=4 .* exports its 3 best"):
        _wire.parse_top_k(parsed, 4)


@pytest.mark.parametrize(
    ("values", "shape", "expected"),
    [([1.0, 2.0, 3.0, 4.0], [2], [1.0, 2.0]), ([2.0], [3], [2.0, 2.0, 2.0]), ([], [2], [0, 0])],
    ids=["extra-values-ignored", "last-value-repeated", "empty-means-zeros"],
)
def test_tensor_to_array_follows_tensorflow_fill_rules(
    values: list[float], shape: list[int], expected: list[float]
) -> None:
    import tensorflow as tf

    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=values)
    for d in shape:
        tensor.tensor_shape.dim.add().size = d
    ours = _wire.tensor_to_array(_wire.tf.TensorProto.FromString(tensor.SerializeToString()))
    np.testing.assert_array_equal(ours, expected)
    if len(values) <= int(np.prod(shape)):  # make_ndarray (unlike the server) rejects extras
        np.testing.assert_array_equal(ours, tf.make_ndarray(tensor))


def test_metadata_response_from_tensorflow_serving_api_parses_signature_def_map() -> None:
    sig = meta_graph_pb2.SignatureDef(method_name=contract.PREDICT_METHOD)
    sig.inputs[contract.IMAGE_BYTES_INPUT].name = "serving_default_image_bytes:0"
    sig.inputs[contract.IMAGE_BYTES_INPUT].dtype = types_pb2.DT_STRING
    sig.inputs[contract.IMAGE_BYTES_INPUT].tensor_shape.dim.add().size = -1
    out = sig.outputs[contract.TOP_K_SCORES_OUTPUT]
    out.dtype = types_pb2.DT_FLOAT
    out.tensor_shape.dim.add().size = -1
    out.tensor_shape.dim.add().size = 5
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    sig_map.signature_def[contract.BYTES_SIGNATURE].CopyFrom(sig)
    sig_map.signature_def["__saved_model_init_op"].outputs["x"].name = "NoOp"
    packed = any_pb2.Any()
    packed.Pack(sig_map)
    assert packed.type_url == _wire.SIGNATURE_DEF_TYPE_URL
    response = get_model_metadata_pb2.GetModelMetadataResponse(
        model_spec=_official_spec("xception", version=9)
    )
    response.metadata["signature_def"].CopyFrom(packed)

    meta = _wire.parse_metadata(_wire.GET_MODEL_METADATA.deserializer(response.SerializeToString()))
    assert meta.name == "xception" and meta.version == 9
    signature = meta.signatures[contract.BYTES_SIGNATURE]
    assert signature.method_name == contract.PREDICT_METHOD
    assert str(signature.inputs[contract.IMAGE_BYTES_INPUT]) == "DT_STRING [-1]"
    assert signature.outputs[contract.TOP_K_SCORES_OUTPUT].shape == (None, 5)
    assert "__saved_model_init_op" in meta.signatures


def test_status_response_from_tensorflow_serving_api_parses() -> None:
    response = get_model_status_pb2.GetModelStatusResponse()
    ok = response.model_version_status.add(version=2)
    ok.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    failed = response.model_version_status.add(version=1)
    failed.state = get_model_status_pb2.ModelVersionStatus.END
    failed.status.error_code = 3
    failed.status.error_message = "bad graph"
    parsed = _wire.parse_status(_wire.GET_MODEL_STATUS.deserializer(response.SerializeToString()))
    assert [(s.version, s.state, s.error_code, s.error_message) for s in parsed] == [
        (2, "AVAILABLE", 0, ""),
        (1, "END", 3, "bad graph"),
    ]


def test_client_messages_live_under_own_proto_package_beside_tensorflow_serving_api() -> None:
    # Both sets are imported in this process: no descriptor-pool clash, distinct full names.
    assert serving_pb2.PredictRequest.DESCRIPTOR.full_name == "xception_client.tfs.PredictRequest"
    assert predict_pb2.PredictRequest.DESCRIPTOR.full_name == "tensorflow.serving.PredictRequest"
    assert _wire.PREDICT.path == "/tensorflow.serving.PredictionService/Predict"
    assert _wire.GET_MODEL_STATUS.path == "/tensorflow.serving.ModelService/GetModelStatus"


def test_generated_code_version_is_the_client_protobuf_lower_bound() -> None:
    pyproject = tomllib.loads((CLIENT.parent / "pyproject.toml").read_text())
    (spec,) = [d for d in pyproject["project"]["dependencies"] if d.startswith("protobuf")]
    floor = re.search(r">=([\d.]+)", spec)
    assert floor is not None
    generated_files = sorted(PROTO_DIR.glob("*_pb2.py"))
    # The loop below proves nothing if the glob matches nothing (a moved or renamed folder).
    assert [f.name for f in generated_files] == list(GENERATED_MODULES)
    for generated in generated_files:
        header = re.search(r"Protobuf Python Version: ([\d.]+)", generated.read_text())
        assert header is not None, generated
        assert header.group(1) == floor.group(1), generated.name


def test_generated_code_matches_the_proto_files(tmp_path: Path) -> None:
    import grpc_tools
    from google.protobuf import descriptor_pb2

    out = tmp_path / "descriptors.pb"
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    src = CLIENT / "src"
    protos = sorted(p.relative_to(src).as_posix() for p in PROTO_DIR.glob("*.proto"))
    assert [Path(p).name for p in protos] == list(PROTO_FILES)  # else nothing is compared
    # protoc runs in a subprocess: its bundled C++ protobuf crashes next to TensorFlow's.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{src}",
            f"-I{well_known}",
            f"--descriptor_set_out={out}",
            *protos,
        ],
        check=True,
        timeout=60,
    )

    compiled = {
        f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    }
    from xception_client._proto import tensorflow_pb2

    for module in (serving_pb2, tensorflow_pb2):
        committed = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        fresh = compiled[committed.name]
        _drop_json_names(fresh.message_type)  # gencode omits the derived json_name
        assert committed == fresh, f"regenerate {module.__name__} (tools/generate-protos)"


def _drop_json_names(messages: Any) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _drop_json_names(message.nested_type)


def test_generated_code_imports_under_protobuf_lower_bound_without_tensorflow() -> None:
    # The gencode check raises at import time if the runtime is older than the gencode; here we
    # import in a fresh interpreter and prove no TensorFlow module came along.
    code = (
        "import sys, xception_client, xception_client._wire;"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'tensorflow_serving')];"
        "print(bad)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
