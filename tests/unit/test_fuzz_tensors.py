"""Fuzzing the server's request parsing without a server: arbitrary TensorProtos (structured and
raw bytes) through `tensors.to_numpy`, and arbitrary REST bodies through the REST JSON modules.

Each must either decode or raise the module's own error (TensorParseError / ServingError), never
anything else, never allocate what the request merely declares, and never hang. Bounded by
example count and a wall-clock budget per test, with a floor on the examples really checked
(tests/fixtures/fuzz.py).
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from xception_serving import json_text, rest_examples, rest_tensors, tensors
from xception_serving.errors import ServingError

from tests.fixtures.fuzz import FuzzRun

FUZZ = settings(
    max_examples=200,
    deadline=None,  # shared CI machines: a slow example is not a failure, a hang is (see below)
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
TIME_CAP_S = 30.0  # per test; examples past it return at once, and count as not checked
SLOWEST_EXAMPLE_S = 5.0
# Examples each test must really check: all 200 take well under a second on a shared 2-core
# machine, so only one about a hundred times slower runs out of the budget and fails.
FLOOR = 150

# Dims are either tiny or astronomically large, never in between: a regression that really
# allocated a declared tensor must fail fast with MemoryError, not thrash the shared machine.
_DIMS = st.one_of(st.integers(0, 4), st.integers(2**45, 2**62), st.just(-1))
_DTYPES = st.sampled_from(
    [*tensors._NUMPY, types_pb2.DT_INVALID, types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT, 999]
)


@st.composite
def tensor_protos(draw: st.DrawFn) -> tensor_pb2.TensorProto:
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


def _fuzz_run(name: str) -> FuzzRun:
    return FuzzRun(name, budget_s=TIME_CAP_S, example_cap_s=SLOWEST_EXAMPLE_S)


def _decode_or_parse_error(proto: tensor_pb2.TensorProto, run: FuzzRun) -> None:
    try:
        array = tensors.to_numpy(proto)
    except tensors.TensorParseError:
        run.outcome("parse error")
        return
    run.outcome("decoded")
    assert isinstance(array, np.ndarray)
    assert array.nbytes <= tensors.MAX_TENSOR_BYTES
    assert list(array.shape) == [d.size for d in proto.tensor_shape.dim]


def test_declared_terabyte_tensor_is_a_parse_error_not_an_allocation() -> None:
    for dtype in (types_pb2.DT_FLOAT, types_pb2.DT_STRING, types_pb2.DT_UINT8):
        proto = tensor_pb2.TensorProto(dtype=dtype)
        proto.tensor_shape.dim.add().size = 2**40
        proto.float_val.append(1.0)
        proto.string_val.append(b"x")
        proto.int_val.append(1)
        with pytest.raises(tensors.TensorParseError, match="too large"):
            tensors.to_numpy(proto)


@pytest.mark.parametrize("dims", [(2**62, 8), (0, 2**45, 2**45)], ids=["full", "empty"])
def test_shape_whose_element_count_overflows_int64_is_a_parse_error(dims: tuple[int, ...]) -> None:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    for size in dims:
        proto.tensor_shape.dim.add().size = size
    with pytest.raises(tensors.TensorParseError):
        tensors.to_numpy(proto)


@pytest.mark.timeout(120)
def test_fuzz_structured_tensor_protos_decode_or_fail_cleanly() -> None:
    run = _fuzz_run("structured tensor protos")

    @FUZZ
    @given(tensor_protos())
    @run.example
    def check(proto: tensor_pb2.TensorProto) -> None:
        _decode_or_parse_error(proto, run)

    check()
    run.assert_checked(at_least=FLOOR, decoded=3)  # five runs of 200 gave 14-54 decoded


@pytest.mark.timeout(120)
def test_fuzz_arbitrary_bytes_as_tensor_protos_decode_or_fail_cleanly() -> None:
    run = _fuzz_run("bytes as tensor protos")

    @FUZZ
    @given(st.binary(max_size=256))
    @run.example
    def check(data: bytes) -> None:
        proto = tensor_pb2.TensorProto()
        try:
            proto.ParseFromString(data)
        except DecodeError:
            run.outcome("not a proto")
            return  # the gRPC layer refuses these before the server sees them
        for dim in proto.tensor_shape.dim:  # keep declared sizes tiny or absurd (see _DIMS)
            if 4 < dim.size < 2**45:
                dim.size = dim.size % 5
        _decode_or_parse_error(proto, run)

    check()
    run.assert_checked(at_least=FLOOR)


_JSON_FRAGMENTS = st.sampled_from(
    ['{', '}', '[', ']', ',', ':', '"instances"', '"inputs"', '"signature_name"', '"b64"',
     '"examples"', '"context"', '"x"', '1', '-1e999', '1e308', 'true', 'null', '"\\u0000"',
     '"\\ud800"', '0.5', '"abc"', ' ', '[[[[[[', ']]]]]]']
)


@st.composite
def json_like(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    return "".join(draw(st.lists(_JSON_FRAGMENTS, max_size=40))).encode()


def _float_inputs(_signature_name: str) -> dict[str, int]:
    return {"x": types_pb2.DT_FLOAT, "image_bytes": types_pb2.DT_STRING}


@pytest.mark.timeout(120)
def test_fuzz_rest_bodies_parse_or_fail_with_a_client_error() -> None:
    from tensorflow_serving.apis import model_pb2

    run = _fuzz_run("REST bodies")
    spec = model_pb2.ModelSpec(name="m")
    client_errors = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}

    @FUZZ
    @given(json_like())
    @run.example
    def check(body: bytes) -> None:
        def predict() -> None:
            doc = json_text.parse_json(body)
            signature_name = rest_tensors.signature_name_of(doc)
            rest_tensors.fill_predict_inputs(doc, signature_name, _float_inputs)

        for kind, parse in (
            ("predict", predict),
            ("classify", lambda: rest_examples.classification_request(body, spec)),
            ("regress", lambda: rest_examples.regression_request(body, spec)),
        ):
            try:
                parse()
            except ServingError as error:
                assert error.code in client_errors, error
                assert error.message
                run.outcome(f"{kind} refused")
            else:
                run.outcome(f"{kind} parsed")

    check()
    run.assert_checked(at_least=FLOOR)
