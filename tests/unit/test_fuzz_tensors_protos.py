"""Fuzzing the server's TensorProto decoding without a server: structured TensorProtos, and
serialized then damaged ones, through `tensors.to_numpy` (the gRPC path).

Every input either decodes or raises TensorParseError, never anything else, never allocates what
the proto merely declares, and never hangs. What decodes is what TensorFlow itself reads from the
proto, and what was built valid is accepted. The generators start from valid tensors and mutate
them, so both ways are reached: each fuzz test asserts a floor on the examples really checked and
on the accepted and the refused ones (tests/fixtures/fuzz.py), and is bounded by example count and
a wall-clock budget. REST bodies: test_fuzz_tensors_rest.py.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from xception_serving.runtime import tensors

from tests.fixtures.fuzz import FuzzRun, damaged, fuzz_settings

FUZZ = fuzz_settings(max_examples=200)
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
        array: np.ndarray = tensor_util.MakeNdarray(reference)
        return array
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
