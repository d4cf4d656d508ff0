"""Fuzzing the server's request parsing without a server: TensorProtos (structured, and serialized
then damaged) through `tensors.to_numpy`, and REST bodies through the REST JSON modules.

Every input either decodes or raises the module's own error (TensorParseError / ServingError
INVALID_ARGUMENT with one of TF Serving's REST messages), never anything else, never allocates
what the request merely declares, and never hangs. What decodes is what TensorFlow itself reads
from the proto, and what was built valid is accepted. The generators start from valid tensors
and valid requests and mutate them, so both ways are reached: each test asserts a floor on the
examples really checked and on the accepted and the refused ones (tests/fixtures/fuzz.py), and is
bounded by example count and a wall-clock budget.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import re
from typing import Any

import grpc
import numpy as np
import pytest
import xception_contract as contract
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import model_pb2
from xception_serving.api.rest import examples as rest_examples
from xception_serving.api.rest import json_reader, json_text
from xception_serving.api.rest import tensors as rest_tensors
from xception_serving.runtime import tensors
from xception_serving.runtime.errors import ServingError

from tests.fixtures.fuzz import FuzzRun, damaged

FUZZ = settings(
    max_examples=200,
    deadline=None,  # shared CI machines: a slow example is not a failure, a hang is (see below)
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
    database=None,
)
TIME_CAP_S = 30.0  # per test; examples past it return at once, and count as not checked
SLOWEST_EXAMPLE_S = 5.0
# Examples each test must really check: all 200 take well under a second on a shared 2-core
# machine, so only one about a hundred times slower runs out of the budget and fails.
FLOOR = 150

# -- TensorProtos -------------------------------------------------------------------------------

_D = types_pb2
_FLOAT32, _FLOAT64 = st.floats(width=32), st.floats()
_HALF_BITS = st.integers(0, 2**16 - 1)  # half_val holds the bit patterns
# Every dtype the server decodes: (its typed field, its numpy type, values that fit the type).
_SUPPORTED: dict[int, tuple[str, Any, st.SearchStrategy[Any]]] = {
    _D.DT_FLOAT: ("float_val", np.float32, _FLOAT32),
    _D.DT_DOUBLE: ("double_val", np.float64, _FLOAT64),
    _D.DT_INT32: ("int_val", np.int32, st.integers(-(2**31), 2**31 - 1)),
    _D.DT_UINT8: ("int_val", np.uint8, st.integers(0, 255)),
    _D.DT_INT16: ("int_val", np.int16, st.integers(-(2**15), 2**15 - 1)),
    _D.DT_INT8: ("int_val", np.int8, st.integers(-128, 127)),
    _D.DT_UINT16: ("int_val", np.uint16, st.integers(0, 2**16 - 1)),
    _D.DT_INT64: ("int64_val", np.int64, st.integers(-(2**63), 2**63 - 1)),
    _D.DT_BOOL: ("bool_val", np.bool_, st.booleans()),
    _D.DT_UINT32: ("uint32_val", np.uint32, st.integers(0, 2**32 - 1)),
    _D.DT_UINT64: ("uint64_val", np.uint64, st.integers(0, 2**64 - 1)),
    _D.DT_HALF: ("half_val", np.float16, _HALF_BITS),
    _D.DT_BFLOAT16: ("half_val", None, _HALF_BITS),  # 2 bytes; numpy has no bfloat16
    _D.DT_COMPLEX64: ("scomplex_val", np.complex64, _FLOAT32),  # two values per element
    _D.DT_COMPLEX128: ("dcomplex_val", np.complex128, _FLOAT64),
    _D.DT_STRING: ("string_val", None, st.binary(max_size=8)),
}
_DTYPES = st.sampled_from(
    [*_SUPPORTED, _D.DT_INVALID, _D.DT_RESOURCE, _D.DT_VARIANT, _D.DT_QINT8, 999]
)


def _values_per_element(field: str) -> int:
    return 2 if field in ("scomplex_val", "dcomplex_val") else 1


# Dims are either tiny or astronomically large, never in between: a regression that really
# allocated a declared tensor must fail fast with MemoryError, not thrash the shared machine.
_DIMS = st.one_of(st.integers(0, 4), st.integers(2**45, 2**62), st.just(-1))


@st.composite
def tensor_protos(draw: st.DrawFn) -> tensor_pb2.TensorProto:
    """Anything a TensorProto can hold: any dtype, any shape, every typed field at once."""
    proto = tensor_pb2.TensorProto(dtype=draw(_DTYPES))
    for size in draw(st.lists(_DIMS, max_size=4)):
        proto.tensor_shape.dim.add().size = size
    proto.tensor_shape.unknown_rank = draw(st.booleans()) and draw(st.booleans())
    if draw(st.booleans()):
        proto.tensor_content = draw(st.binary(max_size=64))
    proto.float_val.extend(draw(st.lists(st.floats(width=32), max_size=8)))
    proto.int_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8)))
    proto.int64_val.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4)))
    proto.string_val.extend(draw(st.lists(st.binary(max_size=16), max_size=4)))
    proto.half_val.extend(draw(st.lists(st.integers(0, 2**16 - 1), max_size=4)))
    proto.bool_val.extend(draw(st.lists(st.booleans(), max_size=4)))
    proto.scomplex_val.extend(draw(st.lists(st.floats(width=32), max_size=4)))
    return proto


@st.composite
def valid_tensor_protos(draw: st.DrawFn) -> tensor_pb2.TensorProto:
    """A well-formed tensor of a supported dtype and a small shape: exact `tensor_content`, or
    up to one typed value per element (TF's fill rules repeat the last one)."""
    dtype = draw(st.sampled_from(sorted(_SUPPORTED)))
    field, numpy_type, values = _SUPPORTED[dtype]
    proto = tensor_pb2.TensorProto(dtype=dtype)
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    count = math.prod(shape)
    if dtype != _D.DT_STRING and draw(st.booleans()):
        size = count * (np.dtype(numpy_type).itemsize if numpy_type else 2)
        proto.tensor_content = draw(st.binary(min_size=size, max_size=size))
        return proto
    n = draw(st.integers(0, count)) * _values_per_element(field)
    getattr(proto, field).extend(draw(st.lists(values, min_size=n, max_size=n)))
    return proto


def _tensorflow_reading(proto: tensor_pb2.TensorProto) -> np.ndarray | None:
    """TensorFlow's own `MakeNdarray` of the proto, its typed values cut to the element count
    as TF's C++ FromProto ignores extras; None where the Python reader refuses the values."""
    from tensorflow.python.framework import tensor_util

    reference = tensor_pb2.TensorProto()
    reference.CopyFrom(proto)
    if not reference.tensor_content:
        field = _SUPPORTED[proto.dtype][0]
        count = math.prod(d.size for d in proto.tensor_shape.dim)
        del getattr(reference, field)[count * _values_per_element(field) :]
    try:
        return tensor_util.MakeNdarray(reference)
    except (ValueError, TypeError, OverflowError):
        return None  # e.g. an int_val of 300 for uint8: the C++ reader wraps, numpy refuses


def _decodes_or_refuses(proto: tensor_pb2.TensorProto, run: FuzzRun) -> str:
    """Decodes `proto` as the gRPC path does; returns "accepted" or "refused"."""
    try:
        array = tensors.to_numpy(proto)
    except tensors.TensorParseError as error:
        run.outcome("refused", "parse error")
        assert str(error), proto
        return "refused"
    run.outcome("accepted", types_pb2.DataType.Name(proto.dtype))
    assert isinstance(array, np.ndarray)
    assert array.nbytes <= tensors.MAX_TENSOR_BYTES
    assert list(array.shape) == [d.size for d in proto.tensor_shape.dim]
    reference = _tensorflow_reading(proto)
    if reference is not None:
        if proto.dtype == _D.DT_STRING:  # MakeNdarray pads with str "" where TF holds b""
            assert array.ravel().tolist() == [
                v if isinstance(v, bytes) else v.encode() for v in reference.ravel().tolist()
            ]
        else:
            assert array.dtype == reference.dtype
            assert array.tobytes() == np.ascontiguousarray(reference).tobytes()
    return "accepted"


def test_declared_terabyte_tensor_is_a_parse_error_not_an_allocation() -> None:
    for dtype in (types_pb2.DT_FLOAT, types_pb2.DT_STRING, types_pb2.DT_UINT8):
        proto = tensor_pb2.TensorProto(dtype=dtype)
        proto.tensor_shape.dim.add().size = 2**40
        proto.float_val.append(1.0)
        proto.string_val.append(b"x")
        proto.int_val.append(1)
        with pytest.raises(
            tensors.TensorParseError,
            match=r"^tensor of shape \[1099511627776\] "
            r"is too large$",
        ):
            tensors.to_numpy(proto)


@pytest.mark.parametrize(
    "dims",
    [
        pytest.param((2**62, 8), id="full"),
        pytest.param((0, 2**45, 2**45), id="empty"),
        # 2**61 float32 elements are 2**63 bytes: numpy refuses that shape even when it is empty.
        pytest.param((0, 2**61), id="empty, bytes overflow"),
    ],
)
def test_shape_whose_element_count_overflows_int64_is_a_parse_error(dims: tuple[int, ...]) -> None:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    for size in dims:
        proto.tensor_shape.dim.add().size = size
    with pytest.raises(tensors.TensorParseError, match=re.escape(f"{list(dims)} is too large")):
        tensors.to_numpy(proto)


@pytest.mark.timeout(120)
def test_fuzz_structured_tensor_protos_decode_as_tensorflow_reads_them_or_fail_cleanly() -> None:
    run = FuzzRun("structured tensor protos", budget_s=TIME_CAP_S, example_cap_s=SLOWEST_EXAMPLE_S)

    def check(proto: tensor_pb2.TensorProto) -> None:
        _decodes_or_refuses(proto, run)

    run.fuzz(st.one_of(tensor_protos(), valid_tensor_protos()), check, settings=FUZZ)
    # Twenty-five runs of 200 gave 70-139 accepted and 61-130 refused.
    run.assert_checked(at_least=FLOOR, accepted=30, refused=30)


@st.composite
def serialized_tensors(draw: st.DrawFn) -> tuple[str, bytes]:
    """(kind, bytes): a valid tensor serialized ("valid"), the same damaged ("damaged"), or
    noise ("noise"), in about 4 : 5 : 1."""
    choice = draw(st.integers(0, 9))
    if choice == 9:
        return "noise", draw(st.binary(max_size=256))
    data = draw(valid_tensor_protos()).SerializeToString()
    if choice < 4:
        return "valid", data
    return "damaged", draw(damaged(data, header=16))


@pytest.mark.timeout(120)
def test_fuzz_bytes_as_tensor_protos_decode_or_fail_cleanly() -> None:
    run = FuzzRun("bytes as tensor protos", budget_s=TIME_CAP_S, example_cap_s=SLOWEST_EXAMPLE_S)

    def check(case: tuple[str, bytes]) -> None:
        kind, data = case
        proto = tensor_pb2.TensorProto()
        try:
            proto.ParseFromString(data)
        except DecodeError:
            assert kind != "valid"
            run.outcome("refused", "not a proto")
            return  # the gRPC layer refuses these before the server sees them
        for dim in proto.tensor_shape.dim:  # keep declared sizes tiny or absurd (see _DIMS)
            if 4 < dim.size < 2**45:
                dim.size = dim.size % 5
        outcome = _decodes_or_refuses(proto, run)
        assert kind != "valid" or outcome == "accepted", proto

    run.fuzz(serialized_tensors(), check, settings=FUZZ)
    # Twenty-five runs of 200 gave 59-105 accepted and 95-141 refused.
    run.assert_checked(at_least=FLOOR, accepted=30, refused=30)


# -- REST bodies --------------------------------------------------------------------------------

# The signatures the fake model answers GetModelMetadata with: the export's three predict
# signatures, and one with two inputs (objects in `instances`, an object in `inputs`).
SIGNATURES: dict[str, dict[str, int]] = {
    contract.BYTES_SIGNATURE: {contract.IMAGE_BYTES_INPUT: _D.DT_STRING},
    contract.PIXELS_SIGNATURE: {contract.PIXELS_INPUT: _D.DT_UINT8},
    contract.PREPROCESSED_SIGNATURE: {contract.PREPROCESSED_INPUT: _D.DT_FLOAT},
    "two_inputs": {"x": _D.DT_FLOAT, contract.IMAGE_BYTES_INPUT: _D.DT_STRING},
}


def _input_dtypes(signature_name: str) -> dict[str, int]:
    """GetInfoMap on the fake model, with the REST handler's error for an unknown signature."""
    key = signature_name or contract.BYTES_SIGNATURE
    if key not in SIGNATURES:
        raise json_text.invalid(f'Serving signature name: "{key}" not found in signature def')
    return SIGNATURES[key]


_B64 = st.binary(max_size=12).map(lambda raw: {"b64": base64.b64encode(raw).decode()})
# JSON tokens each input dtype accepts losslessly (NaN and Infinity are tokens rapidjson reads).
_ELEMENTS = {
    _D.DT_FLOAT: st.one_of(st.floats(width=32), st.integers(-(2**24 - 1), 2**24 - 1)),
    _D.DT_UINT8: st.integers(0, 255),
    _D.DT_STRING: st.one_of(st.text(max_size=8), _B64),
}
_INNER_SHAPES = st.lists(st.integers(1, 3), max_size=2)


def _nested(draw: st.DrawFn, shape: list[int], element: st.SearchStrategy[Any]) -> Any:
    if not shape:
        return draw(element)
    return [_nested(draw, shape[1:], element) for _ in range(shape[0])]


@st.composite
def predict_members(draw: st.DrawFn) -> dict[str, Any]:
    """`signature_name` (omitted for the default one, now and then) and `instances` (row) or
    `inputs` (columnar) holding a valid tensor for each of the signature's inputs."""
    signature = draw(st.sampled_from(sorted(SIGNATURES)))
    dtypes = SIGNATURES[signature]
    members: dict[str, Any] = {}
    if signature != contract.BYTES_SIGNATURE or draw(st.booleans()):
        members["signature_name"] = signature
    if draw(st.booleans()):
        batch = draw(st.integers(1, 3))
        shapes = {alias: draw(_INNER_SHAPES) for alias in dtypes}
        instances = [
            {a: _nested(draw, shapes[a], _ELEMENTS[dtype]) for a, dtype in dtypes.items()}
            for _ in range(batch)
        ]
        members["instances"] = (
            instances if len(dtypes) > 1 else [next(iter(i.values())) for i in instances]
        )
    else:
        columns = {
            alias: _nested(draw, draw(st.lists(st.integers(1, 3), max_size=3)), _ELEMENTS[dtype])
            for alias, dtype in dtypes.items()
        }
        members["inputs"] = columns if len(dtypes) > 1 else next(iter(columns.values()))
    return members


_FEATURE_VALUES = [
    st.floats(width=32),  # float_list
    st.one_of(st.integers(-(2**63), 2**63 - 1), st.booleans()),  # int64_list
    st.one_of(st.text(max_size=8), _B64),  # bytes_list
]
_FEATURE_NAMES = st.sampled_from(["x", "x2", contract.EXAMPLE_IMAGE_FEATURE, "label"])


@st.composite
def _features(draw: st.DrawFn) -> dict[str, Any]:
    features = {}
    for name in draw(st.lists(_FEATURE_NAMES, max_size=3, unique=True)):
        values = draw(st.sampled_from(_FEATURE_VALUES))  # one kind per feature
        one = draw(st.booleans())
        features[name] = draw(values) if one else draw(st.lists(values, max_size=3))
    return features


@st.composite
def example_members(draw: st.DrawFn) -> dict[str, Any]:
    """`examples` (one to three tf.Examples as JSON) and, now and then, a `context`."""
    members: dict[str, Any] = {"examples": draw(st.lists(_features(), min_size=1, max_size=3))}
    if draw(st.booleans()):
        members["context"] = draw(_features())
    return members


@st.composite
def rest_documents(draw: st.DrawFn) -> tuple[dict[str, Any], set[str]]:
    """A valid request document and the verbs that must accept it: predict members, tf.Example
    members, or both (each verb ignores the other's)."""
    doc: dict[str, Any] = {}
    verbs = set()
    if draw(st.booleans()):
        doc.update(draw(predict_members()))
        verbs.add("predict")
    if not verbs or draw(st.booleans()):
        doc.update(draw(example_members()))
        verbs |= {"classify", "regress"}
    order = draw(st.permutations(sorted(doc)))
    return {key: doc[key] for key in order}, verbs


# Values that are wrong in most places of a request document, and right in some.
_ODD_VALUES = st.sampled_from(
    [
        None,
        True,
        False,
        "",
        "x",
        0,
        -1,
        1.5,
        16777217,
        2**53 + 1,
        2**63,
        2**64,
        1e39,
        math.nan,
        [],
        [[]],
        [1.0, [2.0]],
        {},
        {"b64": "aGk="},
        {"b64": "_-_-"},
        {"b64": 1},
        {"x": 1.0},
    ]
).map(copy.deepcopy)  # a fresh copy each time: later edits must not change the samples
_ODD_KEYS = st.sampled_from(
    ["extra", "b64", "instances", "inputs", "examples", "context", "signature_name", "x"]
)


def _places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a member or element inside a document."""
    if isinstance(value, dict):
        children: list[tuple[Any, Any]] = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    else:
        return []
    places = []
    for key, child in children:
        places.append((*path, key))
        places.extend(_places(child, (*path, key)))
    return places


@st.composite
def mutated_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid document with one or two members or elements replaced by an odd value, removed,
    repeated, or joined by an odd member."""
    doc = copy.deepcopy(draw(rest_documents())[0])
    for _ in range(draw(st.integers(1, 2))):
        places = _places(doc)
        if not places:
            break
        *parent_path, key = draw(st.sampled_from(places))
        parent = doc
        for step in parent_path:
            parent = parent[step]
        edit = draw(st.sampled_from(["replace", "remove", "repeat", "add"]))
        if edit == "replace":
            parent[key] = draw(_ODD_VALUES)
        elif edit == "remove":
            del parent[key]
        elif edit == "repeat" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
        elif isinstance(parent, list):
            parent.insert(key, draw(_ODD_VALUES))
        else:
            parent[draw(_ODD_KEYS)] = draw(_ODD_VALUES)
    return doc


_JSON_FRAGMENTS = st.sampled_from(
    [
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        '"instances"',
        '"inputs"',
        '"signature_name"',
        '"b64"',
        '"examples"',
        '"context"',
        '"x"',
        "1",
        "-1e999",
        "1e308",
        "true",
        "null",
        '"\\u0000"',
        '"\\ud800"',
        "0.5",
        '"abc"',
        " ",
        "[[[[[[",
        "]]]]]]",
    ]
)


@st.composite
def json_like(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    return "".join(draw(st.lists(_JSON_FRAGMENTS, max_size=40))).encode()


@st.composite
def rest_bodies(draw: st.DrawFn) -> tuple[str, bytes, set[str]]:
    """(kind, body, verbs that must accept it): "valid" documents, "mutated" ones, valid bodies
    "cut" short or otherwise "damaged", and "noise", in about 4 : 3 : 1 : 1 : 1."""
    choice = draw(st.integers(0, 9))
    ascii_only = draw(st.booleans())

    def dumps(doc: dict[str, Any]) -> bytes:
        return json.dumps(doc, ensure_ascii=ascii_only).encode()

    if choice < 4:
        doc, verbs = draw(rest_documents())
        return "valid", dumps(doc), verbs
    if choice < 7:
        return "mutated", dumps(draw(mutated_documents())), set()
    if choice < 9:
        body = dumps(draw(rest_documents())[0])
        if choice == 7:
            return "cut", body[: draw(st.integers(0, len(body) - 1))], set()
        return "damaged", draw(damaged(body)), set()
    return "noise", draw(json_like()), set()


# Every message the REST JSON modules refuse a body with: TF Serving's wording (json_tensor.cc,
# rapidjson). "Failed to process element ... Error: <code>: <message>" wraps another of them.
_WRAPPED = re.compile(
    r"Failed to process element: \d+ (?:key: .+ )?of 'instances' list\. Error: [A-Z_]+: (.+)",
    re.DOTALL,
)
REST_MESSAGES = tuple(
    re.compile(pattern, re.DOTALL)
    for pattern in (
        # Names a tf.Example cannot hold in Python's protobuf (TF Serving's C++ carries the
        # bytes on).
        r'(?:Feature name:|signature_name) "[^"]*" is not valid UTF-8',
        r"JSON Parse error: The document is empty",
        r"JSON Parse error: .+ at offset: \d+",
        r"JSON Value: .+ (?:Is not object|Excepting 'instances' to be an list/array"
        r"|No values in 'instances' array|Not formatted correctly expecting only one of 'inputs' or"
        r" 'instances' keys to exist |When method is classify, key 'examples' is expected and was"
        r" not found|Expecting 'examples' value to be an list/array"
        r"|'examples' value is an empty array"
        r"|not formatted correctly\. 'signature_name' key must be a string value\.)",
        r"JSON Value: .+ Type: \w+ is not of expected type: \w+",
        r"JSON Value: .+ not formatted correctly for base64 data",
        r"JSON Value: .+ found at incorrect level: \d+ in the JSON DOM\. Expected at level: \d+",
        r"Cannot convert JSON value: .+ to (?:float|double) without loss of precision\.",
        r"Unable to base64 decode",
        r"Encountered list at unexpected level: \d+ expected < \d+",
        r"Encountered list at unexpected size: \d+ at level: \d+ expected size: \d+",
        r"JSON object: does not have named input: .*",
        r"Expecting tensor size: \d+ but got: \d+",
        r"Expecting shape \[[\d,]*\] but got: \[[\d,]*\]",
        r"instances is a plain list, but expecting list of objects as multiple input tensors"
        r" required as per tensorinfo_map",
        r"Expecting object but got list at item \d+ of input list",
        r"Expecting value/list but got object at item \d+ of input list",
        r"Failed to process element: \d+ of 'instances' list\. JSON object: .+ must only have keys:"
        r" .+",
        r"inputs is a plain value/list, but expecting an object as multiple input tensors required"
        r" as per tensorinfo_map",
        r"Missing named input: .+ in 'inputs' object\.",
        r"Missing 'inputs' or 'instances' key",
        r'Serving signature name: ".*" not found in signature def',
        r"Example must be JSON object but got JSON \w+",
        r"Feature: .+ has element with unexpected JSON type: \w+",
        r"Unexpected element type in feature: .+ expecting type: \w+",
        r"Feature: .+ has uint64 element\. Only int64 is supported\.",
    )
)


def is_rest_message(message: str) -> bool:
    wrapped = _WRAPPED.fullmatch(message)
    if wrapped:
        return is_rest_message(wrapped[1])
    return any(pattern.fullmatch(message) for pattern in REST_MESSAGES)


def _predict(body: bytes) -> tuple[dict[str, Any], dict[str, tensor_pb2.TensorProto], str]:
    """The REST predict handler's parsing, up to the PredictRequest inputs."""
    doc = json_reader.parse_json(body)
    signature_name = rest_tensors.signature_name_of(doc)
    inputs, fmt = rest_tensors.fill_predict_inputs(doc, signature_name, _input_dtypes)
    assert set(inputs) == set(_input_dtypes(signature_name))  # one tensor per signature input
    for alias, tensor in inputs.items():
        assert tensor.dtype == _input_dtypes(signature_name)[alias]
        array = tensors.to_numpy(tensor)  # what the core will decode
        if fmt == "row":
            assert array.shape[0] == len(doc["instances"])
    return doc, inputs, fmt


def _examples(parse: Any, body: bytes) -> None:
    request = parse(body, model_pb2.ModelSpec(name="m"))
    doc = json_reader.parse_json(body)
    assert request.model_spec.name == "m"
    assert request.model_spec.signature_name == doc.get("signature_name", "")
    kind = request.input.WhichOneof("kind")
    assert kind == ("example_list_with_context" if "context" in doc else "example_list")
    assert len(getattr(request.input, kind).examples) == len(doc["examples"])


_VERBS = {
    "predict": _predict,
    "classify": lambda body: _examples(rest_examples.classification_request, body),
    "regress": lambda body: _examples(rest_examples.regression_request, body),
}
_CUT_SHORT = re.compile(r"JSON Parse error: (?:The document is empty|.+ at offset: (\d+))")


@pytest.mark.timeout(120)
def test_fuzz_rest_bodies_are_accepted_when_valid_or_refused_with_tf_serving_messages() -> None:
    run = FuzzRun("REST bodies", budget_s=TIME_CAP_S, example_cap_s=SLOWEST_EXAMPLE_S)

    def check(case: tuple[str, bytes, set[str]]) -> None:
        kind, body, must_accept = case
        for verb, parse in _VERBS.items():
            try:
                parse(body)
            except ServingError as error:
                assert verb not in must_accept, f"{verb} refused a valid body: {error}"
                assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
                assert is_rest_message(error.message), error.message
                if kind == "cut":  # a proper prefix of a JSON object is never a document
                    cut = _CUT_SHORT.fullmatch(error.message)
                    assert cut, error.message
                    assert cut[1] is None or int(cut[1]) <= len(body), error.message
                run.outcome(f"{verb} refused", kind)
            else:
                assert kind != "cut", body
                run.outcome(f"{verb} accepted", kind)

    run.fuzz(rest_bodies(), check, settings=FUZZ)
    # Twenty-five runs of 200 gave, per verb, 39-91 accepted and 86-161 refused.
    run.assert_checked(
        at_least=FLOOR,
        **{f"{verb} {way}": 30 for verb in _VERBS for way in ("accepted", "refused")},
    )
