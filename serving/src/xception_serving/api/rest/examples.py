"""tf.Example JSON: TF Serving's classify and regress bodies (`util/json_tensor.cc`).

`classification_request` / `regression_request` read `{"examples": [...], "context": {...}}` into
the tf.Example `Input` (each JSON token picks its feature's kind: bytes, float or int64), and
`classification_json` / `regression_json` write `{"results": ...}`. These verbs carry no
TensorProtos, so this module stands beside `rest_tensors` rather than inside it, sharing its scalar
checks and base64 objects (`_scalars`); the JSON text itself comes from `json_text`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, model_pb2, regression_pb2

from xception_serving.api.rest._scalars import (
    FLOAT32_MAX,
    FLOAT_MAX_INT,
    decode_base64_object,
    is_base64_object,
    is_lossless,
    lossy_error,
)
from xception_serving.api.rest.json_reader import parse_json
from xception_serving.api.rest.json_text import (
    INT64_MAX,
    JsonValue,
    PrettyWriter,
    format_decimal,
    json_type,
    json_value_to_string,
    list_member,
    to_bytes,
)
from xception_serving.api.rest.tensors import signature_name_of
from xception_serving.runtime.errors import ServingError, invalid


def _proto_string(text: str, what: str) -> str:
    """`text` for a protobuf string field. The body's strings keep bytes that are not UTF-8
    (decoded with surrogateescape, as rapidjson keeps them); TF Serving's C++ protobuf carries
    such a name on, Python's cannot hold it, so it is refused here, naming it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = repr(text.encode("utf-8", "surrogateescape"))[2:-1]  # \xff for a bad byte
        raise invalid(f'{what} "{shown}" is not valid UTF-8') from None
    return text


def _feature_kind_error(name: str, feature: feature_pb2.Feature) -> ServingError:
    kind = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}.get(
        feature.WhichOneof("kind") or "", "UNKNOWN"
    )
    return invalid(f"Unexpected element type in feature: {name} expecting type: {kind}")


def _add_to_feature(val: JsonValue, name: str, feature: feature_pb2.Feature) -> None:
    """AddValueToFeature: the JSON token decides the feature kind; all values must agree."""
    kind = feature.WhichOneof("kind")

    def check(expected: str) -> None:
        if kind is not None and kind != expected:
            raise _feature_kind_error(name, feature)

    if val is None or isinstance(val, list):
        raise invalid(f"Feature: {name} has element with unexpected JSON type: {json_type(val)}")
    if isinstance(val, bool):
        check("int64_list")
        feature.int64_list.value.append(1 if val else 0)
    elif isinstance(val, dict):
        if not is_base64_object(val):
            raise invalid(
                f"Feature: {name} has element with unexpected JSON type: {json_type(val)}"
            )
        check("bytes_list")
        feature.bytes_list.value.append(decode_base64_object(val))
    elif isinstance(val, str):
        check("bytes_list")
        feature.bytes_list.value.append(to_bytes(val))
    elif isinstance(val, float):
        check("float_list")
        if not is_lossless(val, FLOAT_MAX_INT, FLOAT32_MAX):
            raise lossy_error(val, "float")
        feature.float_list.value.append(val)
    else:
        check("int64_list")
        if val > INT64_MAX:
            raise invalid(f"Feature: {name} has uint64 element. Only int64 is supported.")
        feature.int64_list.value.append(val)


def _example_from_json(val: JsonValue, example: example_pb2.Example) -> None:
    if not isinstance(val, dict):
        raise invalid(f"Example must be JSON object but got JSON {json_type(val)}")
    for name, content in val.items():
        feature = feature_pb2.Feature()
        for item in content if isinstance(content, list) else [content]:
            _add_to_feature(item, name, feature)
        example.features.feature[_proto_string(name, "Feature name:")].CopyFrom(feature)


def classify_regress_input(doc: Mapping[str, JsonValue]) -> input_pb2.Input:
    """FillClassifyRegressRequestFromJson after parsing and signature_name: the tf.Example Input
    (`context` -> ExampleListWithContext)."""
    result = input_pb2.Input()
    has_context = "context" in doc
    if has_context:
        _example_from_json(doc["context"], result.example_list_with_context.context)
    if "examples" not in doc:
        raise invalid(
            f"JSON Value: {json_value_to_string(doc)} When method is classify, key 'examples' "
            "is expected and was not found"
        )
    examples = list_member(
        doc,
        "examples",
        "Expecting 'examples' value to be an list/array",
        "'examples' value is an empty array",
    )
    for item in examples:
        target = (
            result.example_list_with_context.examples
            if has_context
            else result.example_list.examples
        )
        _example_from_json(item, target.add())
    return result


_Request = TypeVar(
    "_Request", classification_pb2.ClassificationRequest, regression_pb2.RegressionRequest
)


def _fill_request(request: _Request, body: bytes, model_spec: model_pb2.ModelSpec) -> _Request:
    """FillClassifyRegressRequestFromJson: the request's model spec, signature and Input."""
    doc = parse_json(body)
    request.model_spec.CopyFrom(model_spec)
    request.model_spec.signature_name = _proto_string(signature_name_of(doc), "signature_name")
    request.input.CopyFrom(classify_regress_input(doc))
    return request


def classification_request(
    body: bytes, model_spec: model_pb2.ModelSpec
) -> classification_pb2.ClassificationRequest:
    return _fill_request(classification_pb2.ClassificationRequest(), body, model_spec)


def regression_request(
    body: bytes, model_spec: model_pb2.ModelSpec
) -> regression_pb2.RegressionRequest:
    return _fill_request(regression_pb2.RegressionRequest(), body, model_spec)


def classification_json(result: classification_pb2.ClassificationResult) -> bytes:
    if not result.classifications:
        raise invalid("Cannot convert empty ClassificationResults to JSON")
    writer = PrettyWriter()
    writer.start_object()
    writer.key("results")
    writer.start_array()
    for classifications in result.classifications:
        writer.single_line_arrays = True
        writer.start_array()
        for cls in classifications.classes:
            writer.start_array()
            writer.string(to_bytes(cls.label))
            writer.raw(format_decimal(cls.score).encode())
            writer.end_array()
        writer.end_array()
        writer.single_line_arrays = False
    writer.end_array()
    writer.end_object()
    return writer.getvalue()


def regression_json(result: regression_pb2.RegressionResult) -> bytes:
    if not result.regressions:
        raise invalid("Cannot convert empty RegressionResults to JSON")
    writer = PrettyWriter()
    writer.start_object()
    writer.key("results")
    writer.single_line_arrays = True
    writer.start_array()
    writer.raw_array_items([format_decimal(r.value).encode() for r in result.regressions])
    writer.end_array()
    writer.end_object()
    return writer.getvalue()
