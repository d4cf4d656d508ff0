"""REST JSON conversion: request JSON -> TF Serving messages and back, with TF Serving's wording.

One section per module: `tensors` (predict request and response), `examples` (classify /
regress), `status` and `handler` (status, metadata, errors, HTTP status). The JSON layer itself is
specified in test_rest_json_text.py.

Expected values come from TF Serving's own tests and docs (json_tensor_test.cc, api_rest.md) and
from the rapidjson / protobuf layout rules TF Serving's code uses, not from this code's output.
"""

from __future__ import annotations

import base64
import json
import math

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    regression_pb2,
)
from xception_serving.api.rest import examples as rest_examples
from xception_serving.api.rest import handler as rest
from xception_serving.api.rest import json_reader
from xception_serving.api.rest import status as rest_status
from xception_serving.api.rest import tensors as rest_tensors
from xception_serving.runtime.errors import ServingError

FLOAT = types_pb2.DT_FLOAT
STRING = types_pb2.DT_STRING


def loads(body: bytes) -> object:
    return json.loads(body, parse_constant=lambda c: {"NaN": math.nan}.get(c, c))


def fill(doc_text: str, dtypes: dict[str, int]) -> tuple[dict[str, tensor_pb2.TensorProto], str]:
    doc = json_reader.parse_json(doc_text.encode())
    signature_name = rest_tensors.signature_name_of(doc)
    return rest_tensors.fill_predict_inputs(doc, signature_name, lambda _: dtypes)


def error_of(fn: object, *args: object) -> ServingError:
    with pytest.raises(ServingError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value


def tensor(dtype: int, shape: list[int], **values: object) -> tensor_pb2.TensorProto:
    t = tensor_pb2.TensorProto(dtype=dtype, **values)  # type: ignore[arg-type]
    for size in shape:
        t.tensor_shape.dim.add().size = size
    return t


# -- predict request --------------------------------------------------------------------------


def test_row_instances_of_scalars_become_a_batch_vector() -> None:
    tensors, fmt = fill('{"instances": [2.0, 3.0, 4.0]}', {"x": FLOAT})
    assert fmt == "row"
    x = tensors["x"]
    assert x.dtype == FLOAT
    assert [d.size for d in x.tensor_shape.dim] == [3]
    assert list(x.float_val) == [2.0, 3.0, 4.0]


def test_row_instances_of_lists_keep_inner_shape() -> None:
    tensors, _ = fill('{"instances": [[1.0, 2.0], [3.0, 4.0]]}', {"x": FLOAT})
    assert [d.size for d in tensors["x"].tensor_shape.dim] == [2, 2]
    assert list(tensors["x"].float_val) == [1.0, 2.0, 3.0, 4.0]


def test_row_integers_are_accepted_for_float_inputs() -> None:
    tensors, _ = fill('{"instances": [1, 2]}', {"x": FLOAT})
    assert list(tensors["x"].float_val) == [1.0, 2.0]


def test_row_objects_fill_each_named_input_and_decode_b64() -> None:
    text = '{"instances": [{"a": 1.0, "b": {"b64": "aGk="}}, {"a": 2.0, "b": "yo"}]}'
    tensors, _ = fill(text, {"a": FLOAT, "b": STRING})
    assert list(tensors["a"].float_val) == [1.0, 2.0]
    assert list(tensors["b"].string_val) == [b"hi", b"yo"]
    assert [d.size for d in tensors["b"].tensor_shape.dim] == [2]


def test_columnar_inputs_keep_their_shape_and_allow_scalars() -> None:
    tensors, fmt = fill('{"inputs": [2.0, 3.0]}', {"x": FLOAT})
    assert fmt == "columnar"
    assert [d.size for d in tensors["x"].tensor_shape.dim] == [2]
    scalar, _ = fill('{"inputs": 2.0}', {"x": FLOAT})
    assert list(scalar["x"].tensor_shape.dim) == []
    assert list(scalar["x"].float_val) == [2.0]


def test_columnar_inputs_of_an_object_may_differ_in_batch() -> None:
    tensors, _ = fill('{"inputs": {"a": [1.0], "b": ["p", "q"]}}', {"a": FLOAT, "b": STRING})
    assert [d.size for d in tensors["a"].tensor_shape.dim] == [1]
    assert [d.size for d in tensors["b"].tensor_shape.dim] == [2]


def test_vectorized_path_keeps_whole_decimals_beyond_the_float_integer_limit() -> None:
    ok, _ = fill('{"instances": [[1, 2.5], [33554432.0, 1.0]]}', {"x": FLOAT})
    assert list(ok["x"].float_val) == [1.0, 2.5, 33554432.0, 1.0]


def _element_error(index: int, error: str, key: str | None = None) -> str:
    """json_tensor.cc's wrapper around an instance's own error."""
    where = f"{index} key: {key}" if key else f"{index}"
    return (
        f"Failed to process element: {where} of 'instances' list. Error: INVALID_ARGUMENT: {error}"
    )


AB = {"a": FLOAT, "b": STRING}
INVALID = grpc.StatusCode.INVALID_ARGUMENT
# (body, the signature's input dtypes, code, TF Serving's message) for every refused request.
PREDICT_REQUEST_ERRORS = {
    "row string for a float input: a type error naming the element": (
        '{"instances": ["x", "y"]}', {"x": FLOAT}, INVALID,
        _element_error(0, 'JSON Value: "x" Type: String is not of expected type: float'),
    ),
    "row instances of different sizes": (
        '{"instances": [[1.0], [1.0, 2.0]]}', {"x": FLOAT}, INVALID,
        _element_error(1, "Expecting tensor size: 1 but got: 2"),
    ),
    "row instances of one size but other shapes": (
        '{"instances": [[1.0, 2.0], [[1.0], [2.0]]]}', {"x": FLOAT}, INVALID,
        _element_error(1, "Expecting shape [2] but got: [2,1]"),
    ),
    "a ragged instance: the level and size": (
        '{"instances": [[[1.0], [1.0, 2.0]]]}', {"x": FLOAT}, INVALID,
        _element_error(0, "Encountered list at unexpected size: 2 at level: 1 expected size: 1"),
    ),
    "a row object missing an input: the keys it must have": (
        '{"instances": [{"a": 1.0}]}', AB, INVALID,
        "Failed to process element: 0 of 'instances' list. JSON object: {\n"
        '    "a": 1.0\n} must only have keys: a,b',
    ),
    "a row object with an unknown key": (
        '{"instances": [{"a": 1.0, "c": 1.0}]}', {"a": FLOAT}, INVALID,
        _element_error(0, "JSON object: does not have named input: c", key="c"),
    ),
    "plain instances for several inputs": (
        '{"instances": [1.0]}', {"a": FLOAT, "b": FLOAT}, INVALID,
        "instances is a plain list, but expecting list of objects as multiple input tensors "
        "required as per tensorinfo_map",
    ),
    "b64 that is not standard base64": (
        '{"instances": [{"b64": "_-_-"}]}', {"x": STRING}, INVALID,
        _element_error(0, "Unable to base64 decode"),
    ),
    "a b64 object for a float input": (
        '{"instances": [{"b64": "aGk="}]}', {"x": FLOAT}, INVALID,
        _element_error(0, 'JSON Value: {\n    "b64": "aGk="\n} Type: Object is not of expected '
                          "type: float"),
    ),
    "an integer beyond float precision": (
        '{"inputs": [16777217]}', {"x": FLOAT}, INVALID,
        "Cannot convert JSON value: 16777217 to float without loss of precision.",
    ),
    "an integer token beyond float precision among decimals (the vectorized path)": (
        '{"instances": [[1, 2.5], [16777217, 1.0]]}', {"x": FLOAT}, INVALID,
        _element_error(
            1, "Cannot convert JSON value: 16777217 to float without loss of precision."
        ),
    ),
    "a bool among numbers": (
        '{"inputs": [1.0, true]}', {"x": FLOAT}, INVALID,
        "JSON Value: true Type: True is not of expected type: float",
    ),
    "a decimal for an int32 input": (
        '{"inputs": [1.5]}', {"x": types_pb2.DT_INT32}, INVALID,
        "JSON Value: 1.5 Type: Number is not of expected type: int32",
    ),
    "a half input: unimplemented": (
        '{"inputs": [1.5]}', {"x": types_pb2.DT_HALF}, grpc.StatusCode.UNIMPLEMENTED,
        "Conversion of JSON Value: 1.5 to type: half",
    ),
    "an empty instances array": (
        '{"instances": []}', {"x": FLOAT}, INVALID,
        'JSON Value: {\n    "instances": []\n} No values in \'instances\' array',
    ),
    "instances that are not an array": (
        '{"instances": 1}', {"x": FLOAT}, INVALID,
        'JSON Value: {\n    "instances": 1\n} Excepting \'instances\' to be an list/array',
    ),
    "both instances and inputs": (
        '{"instances": [1], "inputs": [1]}', {"x": FLOAT}, INVALID,
        'JSON Value: {\n    "instances": [\n        1\n    ],\n    "inputs": [\n        1\n    ]'
        "\n} Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
    ),
    "neither instances nor inputs": (
        '{"foo": 1}', {"x": FLOAT}, INVALID, "Missing 'inputs' or 'instances' key",
    ),
    "a signature without inputs: named DEFAULT": (
        '{"inputs": 1}', {}, INVALID, "Failed to get input map for signature: DEFAULT",
    ),
    "a columnar object missing an input": (
        '{"inputs": {"a": [1.0]}}', AB, INVALID, "Missing named input: b in 'inputs' object.",
    ),
    "a plain columnar value for several inputs": (
        '{"inputs": [1.0]}', {"a": FLOAT, "b": FLOAT}, INVALID,
        "inputs is a plain value/list, but expecting an object as multiple input tensors "
        "required as per tensorinfo_map",
    ),
    "a signature name that is not a string": (
        '{"signature_name": 100, "inputs": [1.0]}', {"x": FLOAT}, INVALID,
        'JSON Value: {\n    "signature_name": 100,\n    "inputs": [\n        1.0\n    ]\n} not '
        "formatted correctly. 'signature_name' key must be a string value.",
    ),
}  # fmt: skip


@pytest.mark.parametrize(
    ("text", "dtypes", "code", "message"),
    PREDICT_REQUEST_ERRORS.values(),
    ids=list(PREDICT_REQUEST_ERRORS),
)
def test_predict_request_is_refused_with_tf_serving_s_message(
    text: str, dtypes: dict[str, int], code: grpc.StatusCode, message: str
) -> None:
    err = error_of(fill, text, dtypes)
    assert (err.code, err.message) == (code, message)


# -- predict response -------------------------------------------------------------------------


def test_row_response_for_half_plus_two_is_laid_out_as_tf_serving_docs_show() -> None:
    outputs = {"y": tensor(FLOAT, [3], float_val=[3.0, 3.5, 4.0])}
    body = rest_tensors.predict_response_json(outputs, "row")
    # TF Serving README: {\n    "predictions": [2.5, 3.0, 4.5\n    ]\n}
    assert body == b'{\n    "predictions": [3.0, 3.5, 4.0\n    ]\n}'


def test_row_response_strips_batch_dim_per_prediction() -> None:
    outputs = {"y": tensor(FLOAT, [2, 2], float_val=[2.5, 3.0, 3.5, 4.0])}
    assert loads(rest_tensors.predict_response_json(outputs, "row")) == {
        "predictions": [[2.5, 3.0], [3.5, 4.0]]
    }


def test_row_response_with_several_outputs_is_a_list_of_objects() -> None:
    outputs = {
        "scores": tensor(FLOAT, [2, 2], float_val=[0.25, 0.75, 0.5, 0.5]),
        "ids": tensor(types_pb2.DT_INT64, [2], int64_val=[7, 2**40]),
    }
    result = loads(rest_tensors.predict_response_json(outputs, "row"))
    assert result == {
        "predictions": [
            {"ids": 7, "scores": [0.25, 0.75]},
            {"ids": 2**40, "scores": [0.5, 0.5]},  # int64 stays an unquoted number
        ]
    }


def test_bytes_suffix_outputs_are_base64_objects_and_other_strings_raw() -> None:
    outputs = {
        "image_bytes": tensor(STRING, [1], string_val=[b"\x00\xff"]),
        "label": tensor(STRING, [1], string_val=[b"cat"]),
    }
    result = loads(rest_tensors.predict_response_json(outputs, "row"))
    assert result == {
        "predictions": [
            {"image_bytes": {"b64": base64.b64encode(b"\x00\xff").decode()}, "label": "cat"}
        ]
    }


def test_nan_output_is_written_as_bare_token_one_value_per_line_in_columnar() -> None:
    outputs = {"y": tensor(FLOAT, [2], float_val=[math.nan, math.inf])}
    body = rest_tensors.predict_response_json(outputs, "columnar")
    # Columnar output keeps rapidjson's default (multi-line) array layout.
    assert body == b'{\n    "outputs": [\n        NaN,\n        Infinity\n    ]\n}'


def test_columnar_response_keeps_full_tensor_and_scalars() -> None:
    single = {"y": tensor(FLOAT, [3], float_val=[3.0, 3.5, 4.0])}
    assert loads(rest_tensors.predict_response_json(single, "columnar")) == {
        "outputs": [3.0, 3.5, 4.0]
    }
    scalar = {"y": tensor(FLOAT, [], float_val=[3.0])}
    assert loads(rest_tensors.predict_response_json(scalar, "columnar")) == {"outputs": 3.0}
    both = {**single, "z": tensor(types_pb2.DT_BOOL, [1], bool_val=[True])}
    assert loads(rest_tensors.predict_response_json(both, "columnar")) == {
        "outputs": {"y": [3.0, 3.5, 4.0], "z": [True]}
    }


def test_tensor_content_outputs_are_decoded() -> None:
    content = np.array([1.5, 2.5], dtype=np.float32).tobytes()
    outputs = {"y": tensor(FLOAT, [2], tensor_content=content)}
    assert loads(rest_tensors.predict_response_json(outputs, "row")) == {"predictions": [1.5, 2.5]}


def test_row_response_needs_a_batch_dimension_on_every_output() -> None:
    scalar = {"y": tensor(FLOAT, [], float_val=[3.0])}
    err = error_of(rest_tensors.predict_response_json, scalar, "row")
    assert err.message == "Tensor name: y has no shape information "
    mixed = {"a": tensor(FLOAT, [2], float_val=[1, 2]), "b": tensor(FLOAT, [3], float_val=[1])}
    err = error_of(rest_tensors.predict_response_json, mixed, "row")
    assert err.message == "Tensor name: b has inconsistent batch size: 3 expecting: 2"


def test_half_outputs_cannot_be_written() -> None:
    outputs = {"y": tensor(types_pb2.DT_HALF, [1], half_val=[0])}
    err = error_of(rest_tensors.predict_response_json, outputs, "row")
    assert err.message == "Failed to write JSON value for tensor type: half"


# -- classify / regress -----------------------------------------------------------------------


def examples_of(text: str) -> object:
    return rest_examples.classify_regress_input(json_reader.parse_json(text.encode()))


def test_examples_map_json_tokens_to_feature_kinds() -> None:
    result = examples_of(
        '{"examples": [{"x": 2.0, "n": 80, "s": "hi", "b": {"b64": "aGk="}, "t": true}]}'
    )
    feature = result.example_list.examples[0].features.feature  # type: ignore[attr-defined]
    assert list(feature["x"].float_list.value) == [2.0]
    assert list(feature["n"].int64_list.value) == [80]  # an integer token is int64
    assert list(feature["s"].bytes_list.value) == [b"hi"]
    assert list(feature["b"].bytes_list.value) == [b"hi"]
    assert list(feature["t"].int64_list.value) == [1]


def test_context_makes_an_example_list_with_context() -> None:
    result = examples_of('{"context": {"c": [1.0, 2.0]}, "examples": [{"x": 1.0}]}')
    assert result.WhichOneof("kind") == "example_list_with_context"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"examples": [{"x": [1, 2.5]}]}',
            "Unexpected element type in feature: x expecting type: int64",
        ),
        ('{"examples": [{"x": null}]}', "Feature: x has element with unexpected JSON type: Null"),
        ('{"examples": [1]}', "Example must be JSON object but got JSON Number"),
    ],
)
def test_example_features_of_mixed_kinds_null_or_no_object_are_refused_naming_them(
    text: str, message: str
) -> None:
    err = error_of(examples_of, text)
    assert (err.code, err.message) == (grpc.StatusCode.INVALID_ARGUMENT, message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"signature_name": "s"}',
            'JSON Value: {\n    "signature_name": "s"\n} When method is '
            "classify, key 'examples' is expected and was not found",
        ),
        (
            '{"examples": []}',
            "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty array",
        ),
        (
            '{"examples": 1}',
            "JSON Value: {\n    \"examples\": 1\n} Expecting 'examples' value to be an list/array",
        ),
    ],
    ids=["missing", "empty", "not an array"],
)
def test_examples_that_are_missing_empty_or_not_an_array_use_tf_serving_wording(
    text: str, message: str
) -> None:
    err = error_of(examples_of, text)
    assert (err.code, err.message) == (grpc.StatusCode.INVALID_ARGUMENT, message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"examples": [{"\xff": 1.0}]}', 'Feature name: "\\xff" is not valid UTF-8'),
        (b'{"context": {"\xc3": 1}, "examples": [{}]}', 'Feature name: "\\xc3" is not valid UTF-8'),
        (
            b'{"signature_name": "\x80", "examples": [{}]}',
            'signature_name "\\x80" is not valid UTF-8',
        ),
    ],
    ids=["feature", "context feature", "signature"],
)
def test_example_feature_or_signature_name_that_is_not_utf8_is_refused_naming_its_bytes(
    body: bytes, message: str
) -> None:
    # TF Serving's C++ protobuf carries such a name on; Python's cannot hold it in a string field.
    from tensorflow_serving.apis import model_pb2

    err = error_of(rest_examples.regression_request, body, model_pb2.ModelSpec(name="m"))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.message == message


def test_classification_and_regression_results_match_tf_serving_tests() -> None:
    result = classification_pb2.ClassificationResult()
    result.classifications.add().classes.add(label="", score=3.0)
    assert loads(rest_examples.classification_json(result)) == {"results": [[["", 3.0]]]}
    regression = regression_pb2.RegressionResult()
    regression.regressions.add(value=3.0)
    body = rest_examples.regression_json(regression)
    assert loads(body) == {"results": [3.0]}
    assert body == b'{\n    "results": [3.0]\n}'  # single-line array stays open in rapidjson


# -- status / metadata / errors ---------------------------------------------------------------


def test_status_json_matches_tf_serving_test_exactly() -> None:
    response = get_model_status_pb2.GetModelStatusResponse()
    status = response.model_version_status.add(version=123, state=30)
    status.status.error_code = 0  # type: ignore[assignment]
    body = rest_status.status_json(response)
    assert json.loads(body) == {
        "model_version_status": [
            {
                "version": "123",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    # protobuf's JSON printer with whitespace, as TF Serving calls it: one space per level.
    assert body == (
        b'{\n "model_version_status": [\n  {\n   "version": "123",\n   "state": "AVAILABLE",\n'
        b'   "status": {\n    "error_code": "OK",\n    "error_message": ""\n   }\n  }\n ]\n}\n'
    )


def test_metadata_json_has_doubled_signature_def_key_and_all_fields() -> None:
    signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    x = signature.inputs["x"]
    x.name, x.dtype = "x:0", FLOAT
    x.tensor_shape.dim.add(size=-1)
    x.tensor_shape.dim.add(size=1)
    signature.outputs["y"].name = "y:0"
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    signature_map.signature_def["serving_default"].CopyFrom(signature)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = "half_plus_two"
    response.model_spec.version.value = 123
    response.metadata["signature_def"].Pack(signature_map)
    result = json.loads(rest_status.metadata_json(response))
    assert result["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "123"}
    sig = result["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["x"] == {
        "dtype": "DT_FLOAT",
        "tensor_shape": {
            "dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}],
            "unknown_rank": False,
        },
        "name": "x:0",
    }
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["defaults"] == {}


def test_error_json_is_pretty_printed_error_object() -> None:
    body = rest.error_json("Servable not found for request: Latest(half)")
    assert body == b'{\n    "error": "Servable not found for request: Latest(half)"\n}'
    assert rest.error_json("") == b""


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.OK, 200),
        (grpc.StatusCode.CANCELLED, 499),
        (grpc.StatusCode.UNKNOWN, 500),
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
        (grpc.StatusCode.ABORTED, 409),
        (grpc.StatusCode.OUT_OF_RANGE, 400),
        (grpc.StatusCode.UNIMPLEMENTED, 501),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DATA_LOSS, 500),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
    ],
)
def test_http_status_mapping_follows_tf_serving(code: grpc.StatusCode, status: int) -> None:
    assert rest.http_status(code) == status
