"""Fuzzing the server's REST request parsing without a server: JSON bodies (valid, mutated, cut
short, damaged, noise) through the REST JSON modules for predict, classify and regress.

Every body is either accepted or refused with ServingError INVALID_ARGUMENT and one of TF
Serving's REST messages, never anything else, and never hangs; what was built valid is accepted
by the verbs it is valid for. The generators start from valid documents and mutate them, so both
ways are reached: the test asserts a floor on the examples really checked and on the accepted and
the refused ones per verb (tests/fixtures/fuzz.py), and is bounded by example count and a
wall-clock budget. TensorProto decoding: test_fuzz_tensors_protos.py.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import re
from collections.abc import Callable
from typing import Any

import grpc
import pytest
import xception_contract as contract
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import model_pb2
from xception_serving.api.rest import examples as rest_examples
from xception_serving.api.rest import json_reader, json_text
from xception_serving.api.rest import tensors as rest_tensors
from xception_serving.runtime import tensors
from xception_serving.runtime.errors import ServingError

from tests.fixtures.fuzz import FuzzRun, damaged, fuzz_settings

FUZZ = fuzz_settings(max_examples=200)
TIME_CAP_S = 30.0  # per test; examples past it return at once, and count as not checked
SLOWEST_EXAMPLE_S = 5.0
# Examples each test must really check: all 200 take well under a second on a shared 2-core
# machine, so only one about a hundred times slower runs out of the budget and fails.
FLOOR = 150

_D = types_pb2

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
_ODD_VALUES: st.SearchStrategy[Any] = st.sampled_from(
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


_VERBS: dict[str, Callable[[bytes], Any]] = {
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
