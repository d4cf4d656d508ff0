"""TensorProto <-> numpy with TF's rules (Tensor::FromProto, AsProtoField)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2
from xception_serving.runtime import tensors
from xception_serving.runtime.errors import ServingError


def proto(dtype: int, shape: tuple[int, ...], **fields: object) -> tensor_pb2.TensorProto:
    tp = tensor_pb2.TensorProto(dtype=dtype)
    for size in shape:
        tp.tensor_shape.dim.add().size = size
    for name, value in fields.items():
        if name == "tensor_content":
            tp.tensor_content = value  # type: ignore[assignment]
        else:
            getattr(tp, name).extend(value)
    return tp


def test_tensor_content_decodes_without_copy_and_wins_over_typed_fields() -> None:
    data = np.arange(6, dtype=np.float32)
    tp = proto(types_pb2.DT_FLOAT, (2, 3), tensor_content=data.tobytes(), float_val=[9.0])
    array = tensors.to_numpy(tp)
    assert array.shape == (2, 3)
    np.testing.assert_array_equal(array.ravel(), data)
    assert not array.flags.owndata  # a view on the request's bytes


@pytest.mark.parametrize(
    ("values", "shape", "expected"),
    [
        ([1.0, 2.0], (4,), [1.0, 2.0, 2.0, 2.0]),
        ([1.0, 2.0, 3.0], (2,), [1.0, 2.0]),
        ([], (3,), [0.0, 0.0, 0.0]),
        ([5.0], (), [5.0]),
    ],
)
def test_typed_values_fill_and_truncate_like_tensorflow(values, shape, expected) -> None:
    array = tensors.to_numpy(proto(types_pb2.DT_FLOAT, shape, float_val=values))
    assert array.shape == shape
    assert array.ravel().tolist() == expected


def test_strings_are_raw_bytes_and_fill_with_empty_strings() -> None:
    array = tensors.to_numpy(proto(types_pb2.DT_STRING, (3,), string_val=[b"\xff\x00jpeg"]))
    assert array.tolist() == [b"\xff\x00jpeg"] * 3
    assert tensors.to_numpy(proto(types_pb2.DT_STRING, (2,))).tolist() == [b"", b""]


@pytest.mark.parametrize(
    ("dtype", "field", "values", "np_dtype"),
    [
        (types_pb2.DT_UINT8, "int_val", [1, 255], np.uint8),
        (types_pb2.DT_INT64, "int64_val", [2**40, -1], np.int64),
        (types_pb2.DT_BOOL, "bool_val", [True, False], np.bool_),
        (types_pb2.DT_DOUBLE, "double_val", [0.25, -1.5], np.float64),
    ],
)
def test_typed_fields_round_trip(dtype, field, values, np_dtype) -> None:
    array = tensors.to_numpy(proto(dtype, (2,), **{field: values}))
    assert array.dtype == np_dtype
    assert array.tolist() == values
    back = tensors.make_proto(array, dtype)
    assert list(getattr(back, field)) == values
    assert [d.size for d in back.tensor_shape.dim] == [2]
    assert not back.tensor_content


def test_half_precision_uses_half_val_bit_patterns() -> None:
    array = np.array([1.5, -2.0], dtype=np.float16)
    tp = tensors.make_proto(array)
    assert tp.dtype == types_pb2.DT_HALF
    # half_val holds each value's IEEE binary16 bits in an int32: 1.5 is 0x3E00, -2.0 is 0xC000.
    assert list(tp.half_val) == [0x3E00, 0xC000]
    assert not tp.tensor_content and not tp.float_val
    np.testing.assert_array_equal(tensors.to_numpy(tp), array)
    # And the other way: bit patterns a client wrote are read as those halves.
    sent = proto(types_pb2.DT_HALF, (2,), half_val=[0x3C00, 0x7C00])  # 1.0, +inf
    np.testing.assert_array_equal(tensors.to_numpy(sent), np.array([1.0, np.inf], np.float16))


@pytest.mark.parametrize(
    "tp",
    [
        proto(types_pb2.DT_FLOAT, (2,), tensor_content=b"\x00" * 7),
        proto(types_pb2.DT_INVALID, (1,)),
        proto(types_pb2.DT_FLOAT, (-1,)),
    ],
)
def test_invalid_tensors_are_parse_errors(tp) -> None:
    with pytest.raises(tensors.TensorParseError):
        tensors.to_numpy(tp)


def test_outputs_use_typed_repeated_fields_with_exact_shape() -> None:
    tp = tensors.make_proto(np.array([[1.0, 2.0]], dtype=np.float32))
    assert tp.dtype == types_pb2.DT_FLOAT
    assert list(tp.float_val) == [1.0, 2.0]
    assert [d.size for d in tp.tensor_shape.dim] == [1, 2]
    strings = tensors.make_proto(np.array([[b"a", b"b"]], dtype=object))
    assert strings.dtype == types_pb2.DT_STRING and list(strings.string_val) == [b"a", b"b"]
    scalar = tensors.make_proto(np.array(3.0, dtype=np.float32))
    assert len(scalar.tensor_shape.dim) == 0 and list(scalar.float_val) == [3.0]


def test_more_dimensions_than_tensorflow_allows_is_a_parse_error() -> None:
    with pytest.raises(tensors.TensorParseError):
        tensors.to_numpy(proto(types_pb2.DT_FLOAT, (1,) * 255, float_val=[1.0]))


def test_more_dimensions_than_numpy_holds_is_not_supported_naming_both_limits() -> None:
    rank = tensors.NUMPY_MAX_RANK + 1
    with pytest.raises(ServingError) as caught:
        tensors.to_numpy(proto(types_pb2.DT_FLOAT, (1,) * rank, float_val=[1.0]))
    assert caught.value.code == grpc.StatusCode.UNIMPLEMENTED
    assert caught.value.message == (
        f"A tensor of {rank} dimensions is not supported by this server: it holds at most "
        f"{tensors.NUMPY_MAX_RANK} (TensorFlow Serving, 254)."
    )
    at_limit = (1,) * tensors.NUMPY_MAX_RANK
    assert tensors.to_numpy(proto(types_pb2.DT_FLOAT, at_limit, float_val=[1.0])).ndim == len(
        at_limit
    )
