"""Fuzzing the server's request parsing without a server: arbitrary TensorProtos (structured and
raw bytes) through `tensors.to_numpy`, and arbitrary REST bodies through `rest_json`.

Each must either decode or raise the module's own error (TensorParseError / ServingError), never
anything else, never allocate what the request merely declares, and never hang. Bounded by
example count and a wall-clock cap per test.
"""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from xception_serving import rest_json, tensors
from xception_serving.errors import ServingError

FUZZ = settings(
    max_examples=200,
    deadline=None,  # shared CI machines: a slow example is not a failure, a hang is (see below)
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
TIME_CAP_S = 30.0  # per test; examples past the cap return at once
SLOWEST_EXAMPLE_S = 5.0

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


class Budget:
    """Wall-clock cap and slowest-example record for one hypothesis test."""

    def __init__(self) -> None:
        self.ends = time.monotonic() + TIME_CAP_S
        self.slowest = 0.0

    def spent(self) -> bool:
        return time.monotonic() > self.ends

    def timed(self, started: float) -> None:
        self.slowest = max(self.slowest, time.monotonic() - started)
        assert self.slowest < SLOWEST_EXAMPLE_S, f"one example took {self.slowest:.1f} s"


def _decode_or_parse_error(proto: tensor_pb2.TensorProto) -> None:
    try:
        array = tensors.to_numpy(proto)
    except tensors.TensorParseError:
        return
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
    budget = Budget()

    @FUZZ
    @given(tensor_protos())
    def check(proto: tensor_pb2.TensorProto) -> None:
        if budget.spent():
            return
        started = time.monotonic()
        _decode_or_parse_error(proto)
        budget.timed(started)

    check()


@pytest.mark.timeout(120)
def test_fuzz_arbitrary_bytes_as_tensor_protos_decode_or_fail_cleanly() -> None:
    budget = Budget()

    @FUZZ
    @given(st.binary(max_size=256))
    def check(data: bytes) -> None:
        if budget.spent():
            return
        started = time.monotonic()
        proto = tensor_pb2.TensorProto()
        try:
            proto.ParseFromString(data)
        except DecodeError:
            return  # the gRPC layer refuses these before the server sees them
        for dim in proto.tensor_shape.dim:  # keep declared sizes tiny or absurd (see _DIMS)
            if 4 < dim.size < 2**45:
                dim.size = dim.size % 5
        _decode_or_parse_error(proto)
        budget.timed(started)

    check()


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

    budget = Budget()
    spec = model_pb2.ModelSpec(name="m")
    client_errors = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}

    @FUZZ
    @given(json_like())
    def check(body: bytes) -> None:
        if budget.spent():
            return
        started = time.monotonic()
        def predict() -> None:
            doc = rest_json.parse_json(body)
            rest_json.fill_predict_inputs(doc, rest_json.signature_name_of(doc), _float_inputs)

        for parse in (
            predict,
            lambda: rest_json.classification_request(body, spec),
            lambda: rest_json.regression_request(body, spec),
        ):
            try:
                parse()
            except ServingError as error:
                assert error.code in client_errors, error
                assert error.message
        budget.timed(started)

    check()
