"""TensorProto <-> numpy as TF's Tensor::FromProto / AsProtoField do it, no per-element Python.

Decoding: non-empty `tensor_content` wins (zero-copy `np.frombuffer`); otherwise the typed field is
used with TF's rules: more values than elements -> extras ignored, fewer but >= 1 -> the last value
repeats, none -> zeros / empty strings. Encoding writes the typed repeated field (TF Serving's
default output form), never `tensor_content`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.python.framework import dtypes as tf_dtypes

from xception_serving.runtime.errors import ServingError

# TensorFlow ships no stubs for its protos, so mypy sees this alias as Any; it names the message.
TensorProto: TypeAlias = tensor_pb2.TensorProto


class TensorParseError(ValueError):
    """The TensorProto does not describe a valid tensor (TF: `tensor parsing error`)."""


# A typed field expands to the declared shape (the last value repeats), so a few bytes on the wire
# can declare terabytes. TF's allocator fails such tensors ("tensor parsing error"); numpy would
# either raise MemoryError or, below the overcommit limit, really fill gigabytes. Nothing larger
# than the gRPC message limit can be sent as data, so larger declared tensors are refused.
MAX_TENSOR_BYTES = 2**31 - 1

# TensorShape::MaxDimensions(): a TensorProto of more dimensions does not parse in TensorFlow.
TF_MAX_RANK = 254
# numpy's limit (NPY_MAXDIMS), which every tensor fed to or read from a Session here goes through.
NUMPY_MAX_RANK = 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else 32


# DataType -> (numpy scalar type, typed field name).
_NUMPY: dict[int, tuple[type[np.generic], str]] = {
    types_pb2.DT_FLOAT: (np.float32, "float_val"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val"),
    types_pb2.DT_INT32: (np.int32, "int_val"),
    types_pb2.DT_UINT8: (np.uint8, "int_val"),
    types_pb2.DT_INT16: (np.int16, "int_val"),
    types_pb2.DT_INT8: (np.int8, "int_val"),
    types_pb2.DT_UINT16: (np.uint16, "int_val"),
    types_pb2.DT_INT64: (np.int64, "int64_val"),
    types_pb2.DT_BOOL: (np.bool_, "bool_val"),
    types_pb2.DT_UINT32: (np.uint32, "uint32_val"),
    types_pb2.DT_UINT64: (np.uint64, "uint64_val"),
    types_pb2.DT_HALF: (np.float16, "half_val"),
    types_pb2.DT_BFLOAT16: (tf_dtypes.bfloat16.as_numpy_dtype, "half_val"),
    types_pb2.DT_COMPLEX64: (np.complex64, "scomplex_val"),
    types_pb2.DT_COMPLEX128: (np.complex128, "dcomplex_val"),
    types_pb2.DT_STRING: (np.object_, "string_val"),
}

# TF's DataTypeString names, used in runtime and REST error messages ("Expects arg[0] to be float
# ...", "... is not of expected type: float").
TF_TYPE_NAMES: dict[int, str] = {
    types_pb2.DT_FLOAT: "float",
    types_pb2.DT_DOUBLE: "double",
    types_pb2.DT_INT32: "int32",
    types_pb2.DT_UINT8: "uint8",
    types_pb2.DT_INT16: "int16",
    types_pb2.DT_INT8: "int8",
    types_pb2.DT_UINT16: "uint16",
    types_pb2.DT_INT64: "int64",
    types_pb2.DT_BOOL: "bool",
    types_pb2.DT_UINT32: "uint32",
    types_pb2.DT_UINT64: "uint64",
    types_pb2.DT_HALF: "half",
    types_pb2.DT_BFLOAT16: "bfloat16",
    types_pb2.DT_COMPLEX64: "complex64",
    types_pb2.DT_COMPLEX128: "complex128",
    types_pb2.DT_STRING: "string",
    types_pb2.DT_QINT8: "qint8",
    types_pb2.DT_QUINT8: "quint8",
    types_pb2.DT_QINT32: "qint32",
    types_pb2.DT_QINT16: "qint16",
    types_pb2.DT_QUINT16: "quint16",
    types_pb2.DT_RESOURCE: "resource",
    types_pb2.DT_VARIANT: "variant",
}

_DTYPE_OF_NUMPY: dict[np.dtype[Any], int] = {}
for _dt, (_np_type, _field) in _NUMPY.items():
    if _dt not in (types_pb2.DT_STRING,):
        _DTYPE_OF_NUMPY[np.dtype(_np_type)] = _dt


def type_name(dtype: int) -> str:
    enum_name: str = types_pb2.DataType.Name(dtype)
    return TF_TYPE_NAMES.get(dtype, enum_name.removeprefix("DT_").lower())


def datatype_of(array: np.ndarray) -> int:
    """The DataType enum of a numpy array (object/bytes arrays are DT_STRING)."""
    if array.dtype.kind in "OSU":
        string: int = types_pb2.DT_STRING
        return string
    try:
        return _DTYPE_OF_NUMPY[array.dtype]
    except KeyError:
        raise TypeError(f"no TensorFlow dtype for numpy dtype {array.dtype}") from None


def _shape(proto: TensorProto) -> tuple[int, ...]:
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise TensorParseError("unknown rank")
    rank = len(shape.dim)
    if rank > TF_MAX_RANK:
        raise TensorParseError(f"{rank} dimensions")  # TensorShape::IsValid fails FromProto
    if rank > NUMPY_MAX_RANK:
        # TensorFlow would hold this tensor; a Python Session is fed through numpy, which
        # cannot, so the request is refused as not supported here rather than malformed.
        raise ServingError(
            grpc.StatusCode.UNIMPLEMENTED,
            f"A tensor of {rank} dimensions is not supported by this server: it holds at most "
            f"{NUMPY_MAX_RANK} (TensorFlow Serving, {TF_MAX_RANK}).",
        )
    dims = tuple(d.size for d in shape.dim)
    if any(d < 0 for d in dims):
        raise TensorParseError("negative dimension")
    return dims


def _fill(values: np.ndarray, count: int) -> np.ndarray:
    """TF's typed-field rules: truncate extras, repeat the last value, or zeros when empty."""
    n = values.shape[0]
    if n == count:
        return values
    if n > count:
        return values[:count]
    if n == 0:
        return np.zeros(count, dtype=values.dtype)
    out = np.empty(count, dtype=values.dtype)
    out[:n] = values
    out[n:] = values[-1]
    return out


def _element_count(shape: tuple[int, ...], itemsize: int) -> int:
    """The number of elements, refusing tensors too large to hold here."""
    count = 1
    # Product of the non-zero dims: numpy refuses a shape whose elements or bytes overflow int64,
    # even an empty one, so such a shape is refused here with the message of any too-large tensor.
    extent = 1
    for size in shape:  # Python ints: no int64 overflow on absurd shapes
        count *= size
        extent *= max(size, 1)
    if count * itemsize > MAX_TENSOR_BYTES or extent >= 2**62 or extent * itemsize >= 2**63:
        raise TensorParseError(f"tensor of shape {list(shape)} is too large")
    return count


def _strings(proto: TensorProto, count: int, shape: tuple[int, ...]) -> np.ndarray:
    """A DT_STRING tensor as an object array of bytes."""
    if proto.tensor_content:
        # TF's varint-prefixed string encoding; rare on the wire, let TF decode it.
        from tensorflow.python.framework import tensor_util

        try:
            return np.asarray(tensor_util.MakeNdarray(proto), dtype=object)
        except Exception as err:
            raise TensorParseError(str(err)) from err
    # An empty field fills with empty strings: the typed-field rule, repeating b"".
    strings = list(proto.string_val) or [b""]
    values = np.empty(len(strings), dtype=object)
    values[:] = strings
    return _fill(values, count).reshape(shape)


def _halves(raw: Sequence[int], np_dtype: np.dtype[Any]) -> np.ndarray:
    """half_val holds float16 and bfloat16 bit patterns in int32s."""
    return np.asarray(raw, dtype=np.int32).astype(np.uint16).view(np_dtype)


def _complex_pairs(
    part: type[np.floating[Any]],
) -> Callable[[Sequence[float], np.dtype[Any]], np.ndarray]:
    """scomplex_val/dcomplex_val hold (real, imaginary) pairs; a trailing half pair is dropped."""

    def decode(raw: Sequence[float], np_dtype: np.dtype[Any]) -> np.ndarray:
        pairs = np.asarray(raw, dtype=part)
        return pairs[: (pairs.shape[0] // 2) * 2].view(np_dtype)

    return decode


def _small_ints(raw: Sequence[int], np_dtype: np.dtype[Any]) -> np.ndarray:
    """int_val holds every type of 32 bits or fewer as int32, wrapped to the type's width."""
    return np.asarray(raw, dtype=np.int32).astype(np_dtype)


# Typed fields whose values are not simply the dtype's own; any other converts directly.
_FIELD_DECODERS: dict[str, Callable[[Any, np.dtype[Any]], np.ndarray]] = {
    "half_val": _halves,
    "scomplex_val": _complex_pairs(np.float32),
    "dcomplex_val": _complex_pairs(np.float64),
    "int_val": _small_ints,
}


def _numeric(proto: TensorProto, field: str, np_dtype: np.dtype[Any], count: int) -> np.ndarray:
    """Flat values of a numeric tensor: tensor_content as is, else the typed field filled out."""
    if proto.tensor_content:
        content = proto.tensor_content
        if len(content) != count * np_dtype.itemsize:
            raise TensorParseError("tensor_content size does not match shape and dtype")
        return np.frombuffer(content, dtype=np_dtype)
    raw = getattr(proto, field)
    decode = _FIELD_DECODERS.get(field)
    values = np.asarray(raw, dtype=np_dtype) if decode is None else decode(raw, np_dtype)
    return _fill(values, count)


def to_numpy(proto: TensorProto) -> np.ndarray:
    """Decode a TensorProto like TF's Tensor::FromProto. Raises TensorParseError."""
    dtype = proto.dtype
    if dtype not in _NUMPY:
        raise TensorParseError(f"unsupported dtype {dtype}")
    np_type, field = _NUMPY[dtype]
    shape = _shape(proto)
    if dtype == types_pb2.DT_STRING:
        return _strings(proto, _element_count(shape, 8), shape)  # 8: a pointer per string
    np_dtype = np.dtype(np_type)
    count = _element_count(shape, np_dtype.itemsize)
    return _numeric(proto, field, np_dtype, count).reshape(shape)


def _set_shape(proto: TensorProto, shape: tuple[int, ...]) -> None:
    proto.tensor_shape.CopyFrom(
        tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in shape]
        )
    )


def fill_proto(proto: TensorProto, array: np.ndarray, dtype: int | None = None) -> None:
    """Write `array` into `proto` as TF's AsProtoField does: dtype, shape, typed repeated field."""
    if dtype is None:
        dtype = datatype_of(array)
    proto.dtype = dtype
    _set_shape(proto, array.shape)
    if array.size == 0:
        return
    _np_type, field = _NUMPY[dtype]
    flat = array.reshape(-1)
    if dtype == types_pb2.DT_STRING:
        proto.string_val.extend(
            v if isinstance(v, bytes) else str(v).encode() for v in flat.tolist()
        )
    elif field == "half_val":
        proto.half_val.extend(flat.view(np.uint16).astype(np.int32).tolist())
    elif field in ("scomplex_val", "dcomplex_val"):
        getattr(proto, field).extend(flat.view(flat.real.dtype).tolist())
    else:
        # tolist() converts in C; the repeated field extends from a plain list fast.
        getattr(proto, field).extend(flat.tolist())


def fill_values(proto: TensorProto, dtype: int, shape: list[int], values: Sequence[object]) -> None:
    """Write flat Python values, already checked against `dtype`, into `dtype`'s typed field (the
    REST layer's AsProtoField: its JSON walk yields lists, not arrays)."""
    proto.dtype = dtype
    _set_shape(proto, tuple(shape))
    entry = _NUMPY.get(dtype)
    if entry is not None and values:
        getattr(proto, entry[1]).extend(values)


def make_proto(array: np.ndarray, dtype: int | None = None) -> TensorProto:
    proto = TensorProto()
    fill_proto(proto, array, dtype)
    return proto
