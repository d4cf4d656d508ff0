"""JSON scalars -> tensor elements and feature values, with TF Serving's checks
(`util/json_tensor.cc`).

What a JSON token may become for each DataType (AddValueToTensor), the precision limits, the
`{"b64": ...}` object and the error texts: shared by the predict walk (`tensors`) and the tf.Example
reader (`examples`).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2

from xception_serving.api.rest.json_text import (
    INT64_MAX,
    INT64_MIN,
    UINT64_MAX,
    JsonValue,
    json_type,
    json_value_to_string,
    to_bytes,
)
from xception_serving.runtime import tensors
from xception_serving.runtime.errors import ServingError, invalid

# One tensor element as the JSON walk yields it and `runtime.tensors` stores in a typed field.
Element = bool | int | float | bytes


def dtype_name(dtype: int) -> str:
    return tensors.TF_TYPE_NAMES.get(dtype, "unknown")


FLOAT_MAX_INT = 2**24 - 1
DOUBLE_MAX_INT = 2**53 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _is_number(val: JsonValue) -> bool:
    return (isinstance(val, (int, float))) and not isinstance(val, bool)


def type_error(val: JsonValue, dtype: int) -> ServingError:
    return invalid(
        f"JSON Value: {json_value_to_string(val)} Type: {json_type(val)} "
        f"is not of expected type: {dtype_name(dtype)}"
    )


def lossy_error(val: JsonValue, target: str) -> ServingError:
    return invalid(
        f"Cannot convert JSON value: {json_value_to_string(val)} to {target} "
        "without loss of precision."
    )


def is_lossless(val: int | float, max_int: int, max_float: float) -> bool:
    if isinstance(val, int):
        return abs(val) <= max_int
    if not math.isfinite(val):
        return True
    return -max_float <= val <= max_float


def is_base64_object(val: JsonValue) -> bool:
    return isinstance(val, dict) and len(val) == 1 and isinstance(val.get("b64"), str)


def decode_base64_object(val: JsonValue) -> bytes:
    if not is_base64_object(val):
        raise invalid(
            f"JSON Value: {json_value_to_string(val)} not formatted correctly for base64 data"
        )
    text = val["b64"]
    try:
        encoded = text.encode("ascii")
        if len(encoded) % 4:
            encoded += b"=" * (-len(encoded) % 4)  # absl accepts unpadded input
        return base64.b64decode(encoded, validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise invalid("Unable to base64 decode") from None


def _decimal_element(
    max_int: int, max_float: float, target: str
) -> Callable[[JsonValue, int], Element]:
    """Any JSON number the floating type `target` holds without loss of precision."""

    def convert(val: JsonValue, dtype: int) -> Element:
        if not _is_number(val):
            raise type_error(val, dtype)
        if not is_lossless(val, max_int, max_float):
            raise lossy_error(val, target)
        return float(val)

    return convert


def _integer_element(low: int, high: int) -> Callable[[JsonValue, int], Element]:
    """A JSON integer (never a bool or a decimal) within [low, high]."""

    def convert(val: JsonValue, dtype: int) -> Element:
        if not (type(val) is int and low <= val <= high):
            raise type_error(val, dtype)
        return val

    return convert


def _string_element(val: JsonValue, dtype: int) -> Element:
    if not isinstance(val, str):
        raise type_error(val, dtype)
    return to_bytes(val)


def _bool_element(val: JsonValue, dtype: int) -> Element:
    if not isinstance(val, bool):
        raise type_error(val, dtype)
    return val


# AddValueToTensor's cases. The small integer types all take any int32 value, as TF Serving does.
_INT32_ELEMENT = _integer_element(-(2**31), 2**31 - 1)
_ELEMENTS: dict[int, Callable[[JsonValue, int], Element]] = {
    types_pb2.DT_FLOAT: _decimal_element(FLOAT_MAX_INT, FLOAT32_MAX, "float"),
    types_pb2.DT_DOUBLE: _decimal_element(DOUBLE_MAX_INT, math.inf, "double"),
    types_pb2.DT_INT32: _INT32_ELEMENT,
    types_pb2.DT_INT16: _INT32_ELEMENT,
    types_pb2.DT_INT8: _INT32_ELEMENT,
    types_pb2.DT_UINT8: _INT32_ELEMENT,
    types_pb2.DT_STRING: _string_element,
    types_pb2.DT_INT64: _integer_element(INT64_MIN, INT64_MAX),
    types_pb2.DT_BOOL: _bool_element,
    types_pb2.DT_UINT32: _integer_element(0, 2**32 - 1),
    types_pb2.DT_UINT64: _integer_element(0, UINT64_MAX),
}


def scalar(val: JsonValue, dtype: int) -> Element:
    """AddValueToTensor: one JSON scalar -> one tensor element (or TF Serving's error)."""
    convert = _ELEMENTS.get(dtype)
    if convert is None:
        raise ServingError(
            grpc.StatusCode.UNIMPLEMENTED,
            f"Conversion of JSON Value: {json_value_to_string(val)} to type: {dtype_name(dtype)}",
        )
    return convert(val, dtype)
