"""JSON <-> TF Serving messages for the REST API, byte for byte as TF Serving writes them.

TF Serving builds its REST bodies with rapidjson's PrettyWriter (`util/json_tensor.cc`) and its
status/metadata bodies with protobuf's JSON printer (`http_rest_api_util.cc`). This module
reproduces both, including the error wordings, so a client sees the same text from the local
server as from `tensorflow_model_server`:

- `parse_json`: the request document, with rapidjson's parse error messages and offsets and its
  NaN/Infinity tokens;
- `fill_predict_inputs`: `instances` (row) and `inputs` (columnar) -> typed TensorProtos, using the
  signature's input dtypes;
- `predict_response_json`: outputs -> `{"predictions": ...}` / `{"outputs": ...}` (`_bytes`
  outputs as `{"b64": ...}`, whole floats with `.0`, NaN/Infinity tokens, int64 unquoted);
- `classify_regress_request` / `classification_json` / `regression_json` (tf.Example input);
- `status_json` / `metadata_json` (protobuf JSON mapping, TF Serving's layout);
- `error_json` (`{"error": ...}`) and `http_status` (TF Serving's code -> HTTP mapping).

Every failure is a ServingError carrying TF Serving's code and message.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import grpc
import numpy as np
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
    regression_pb2,
)

from xception_serving.errors import ServingError
from xception_serving.tensors import TF_TYPE_NAMES

Format = Literal["row", "columnar"]
JsonValue = Any  # what json.loads returns (dict / list / str / int / float / bool / None)

_INVALID = grpc.StatusCode.INVALID_ARGUMENT

# http_server.cc ToHTTPStatusCode.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def dtype_name(dtype: int) -> str:
    return TF_TYPE_NAMES.get(dtype, "unknown")


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


def _invalid(message: str) -> ServingError:
    return ServingError(_INVALID, message)


# ---------------------------------------------------------------------------------------------
# rapidjson PrettyWriter emulation (4-space indent, optional single-line arrays).

_ESCAPES = {0x22: b'\\"', 0x5C: b"\\\\", 0x08: b"\\b", 0x0C: b"\\f", 0x0A: b"\\n", 0x0D: b"\\r",
            0x09: b"\\t"}
_NEEDS_ESCAPE = re.compile(rb'[\x00-\x1f"\\]')


def _escape_match(match: re.Match[bytes]) -> bytes:
    byte = match.group()[0]
    return _ESCAPES.get(byte) or b"\\u00%02X" % byte  # rapidjson: upper-case hex


def quote_bytes(raw: bytes) -> bytes:
    """A JSON string as rapidjson writes it: raw bytes kept (no UTF-8 check), controls escaped."""
    return b'"' + _NEEDS_ESCAPE.sub(_escape_match, raw) + b'"'


def _to_bytes(text: str) -> bytes:
    # Request strings came from bytes decoded with surrogateescape; give the original bytes back.
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


class PrettyWriter:
    """rapidjson::PrettyWriter's layout, including kFormatSingleLineArray switching."""

    def __init__(self) -> None:
        self._out: list[bytes] = []
        self._stack: list[list[int]] = []  # [in_array, value_count]
        self.single_line_arrays = False

    def _indent(self) -> bytes:
        return b" " * (4 * len(self._stack))

    def _prefix(self) -> None:
        if not self._stack:
            return
        level = self._stack[-1]
        out = self._out
        if level[0]:
            if level[1] > 0:
                out.append(b", " if self.single_line_arrays else b",")
            if not self.single_line_arrays:
                out.append(b"\n" + self._indent())
        else:
            if level[1] > 0:
                out.append(b",\n" if level[1] % 2 == 0 else b": ")
            else:
                out.append(b"\n")
            if level[1] % 2 == 0:
                out.append(self._indent())
        level[1] += 1

    def start_object(self) -> None:
        self._prefix()
        self._out.append(b"{")
        self._stack.append([0, 0])

    def end_object(self) -> None:
        level = self._stack.pop()
        if level[1]:
            self._out.append(b"\n" + self._indent())
        self._out.append(b"}")

    def start_array(self) -> None:
        self._prefix()
        self._out.append(b"[")
        self._stack.append([1, 0])

    def end_array(self) -> None:
        level = self._stack.pop()
        if level[1] and not self.single_line_arrays:
            self._out.append(b"\n" + self._indent())
        self._out.append(b"]")

    def key(self, name: str | bytes) -> None:
        self._prefix()
        self._out.append(quote_bytes(name if isinstance(name, bytes) else _to_bytes(name)))

    def raw(self, token: bytes) -> None:
        self._prefix()
        self._out.append(token)

    def raw_array_items(self, tokens: list[bytes]) -> None:
        """Append many scalar tokens to the open array at once (same bytes as one by one)."""
        if not tokens:
            return
        level = self._stack[-1]
        if self.single_line_arrays:
            first, sep = b"", b", "
        else:
            first = b"\n" + self._indent()
            sep = b"," + first
        if level[1] > 0:
            self._out.append(sep)
        else:
            self._out.append(first)
        self._out.append(sep.join(tokens))
        level[1] += len(tokens)

    def string(self, raw: bytes) -> None:
        self.raw(quote_bytes(raw))

    def value(self, val: JsonValue) -> None:
        """Write a parsed JSON value as rapidjson's Value::Accept would."""
        if isinstance(val, dict):
            self.start_object()
            for name, item in val.items():
                self.key(name)
                self.value(item)
            self.end_object()
        elif isinstance(val, list):
            self.start_array()
            for item in val:
                self.value(item)
            self.end_array()
        elif isinstance(val, str):
            self.string(_to_bytes(val))
        elif val is None:
            self.raw(b"null")
        elif val is True:
            self.raw(b"true")
        elif val is False:
            self.raw(b"false")
        elif isinstance(val, int):
            self.raw(str(val).encode())
        else:
            self.raw(rapidjson_double(val).encode())

    def getvalue(self) -> bytes:
        return b"".join(self._out)


def rapidjson_double(value: float) -> str:
    """rapidjson Writer::Double: shortest digits (Grisu2) laid out by its Prettify()."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0.0"
    decimal = Decimal(repr(abs(value))).normalize()
    digits = "".join(str(d) for d in decimal.as_tuple().digits)
    exponent = int(decimal.as_tuple().exponent)
    length = len(digits)
    kk = length + exponent
    if exponent >= 0 and kk <= 21:
        text = digits + "0" * exponent + ".0"
    elif 0 < kk <= 21:
        text = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        text = "0." + "0" * (-kk) + digits
    elif length == 1:
        text = digits + "e" + str(kk - 1)
    else:
        text = digits[0] + "." + digits[1:] + "e" + str(kk - 1)
    return sign + text


def format_decimal(value: float, *, double: bool = False) -> str:
    """TF Serving's WriteDecimal: %g with 6 digits unless that does not round-trip, then full
    precision; `.0` added to whole numbers; NaN / Infinity / -Infinity as bare tokens."""
    if math.isfinite(value):
        text = f"{value:.6g}"
        if double:
            if float(text) != value:
                text = f"{value:.17g}"
        elif np.float32(float(text)) != np.float32(value):
            text = f"{value:.9g}"
        if "." not in text and "e" not in text:
            text += ".0"
        return text
    if math.isnan(value):
        return "NaN"
    return "-Infinity" if value < 0 else "Infinity"


def json_value_to_string(val: JsonValue) -> str:
    """TF Serving's JsonValueToString (used inside error messages)."""
    if isinstance(val, float):
        if math.isfinite(val) and abs(val) > 3.4028234e38:
            return format_decimal(val, double=True)
        return format_decimal(float(np.float32(val)) if math.isfinite(val) else val)
    writer = PrettyWriter()
    writer.value(val)
    return writer.getvalue().decode("utf-8", "replace")


def _json_type(val: JsonValue) -> str:
    if val is None:
        return "Null"
    if val is True:
        return "True"
    if val is False:
        return "False"
    if isinstance(val, dict):
        return "Object"
    if isinstance(val, list):
        return "Array"
    if isinstance(val, str):
        return "String"
    return "Number"


# ---------------------------------------------------------------------------------------------
# Parsing, with rapidjson's error messages.

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT64_MAX = 2**64 - 1


def _parse_int(text: str) -> int | float:
    value = int(text)
    # rapidjson keeps integers that fit int64/uint64; anything larger becomes a double.
    if _INT64_MIN <= value <= _UINT64_MAX:
        return value
    return float(text)


def _first_member_wins(pairs: list[tuple[str, JsonValue]]) -> dict[str, JsonValue]:
    # rapidjson's FindMember returns the first of duplicate keys.
    obj: dict[str, JsonValue] = {}
    for name, value in pairs:
        obj.setdefault(name, value)
    return obj


class Document(dict):  # type: ignore[type-arg]
    """The parsed top-level object, plus whether the body could hold true/false tokens (when it
    cannot, numeric arrays may take the vectorized path: numpy would silently turn bools into
    numbers)."""

    may_have_bools: bool = True


def parse_json(body: bytes) -> Document:
    """Parse a request body as TF Serving's ParseJson does (top level must be an object)."""
    if not body:
        raise _invalid("JSON Parse error: The document is empty")
    text = body.decode("utf-8", "surrogateescape")
    try:
        doc = json.loads(
            text, parse_int=_parse_int, object_pairs_hook=_first_member_wins,
            parse_constant=_CONSTANTS.__getitem__,
        )
    except (ValueError, RecursionError):
        doc = _RapidJsonParser(text).parse()  # exact rapidjson error (or its extra tokens)
    if not isinstance(doc, dict):
        raise _invalid(f"JSON Value: {json_value_to_string(doc)} Is not object")
    document = Document(doc)
    document.may_have_bools = b"true" in body or b"false" in body
    return document


_CONSTANTS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class _RapidJsonParser:
    """A small recursive-descent parser that fails exactly where rapidjson fails, with its
    message and offset. Only used when the fast standard parser rejected the text (or for the
    `Inf` spelling rapidjson also accepts)."""

    _WS = " \t\n\r"

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.depth = 0

    def fail(self, message: str, offset: int | None = None) -> ServingError:
        at = self.i if offset is None else offset
        # rapidjson offsets count bytes, not characters.
        byte_offset = len(_to_bytes(self.s[:at]))
        return _invalid(f"JSON Parse error: {message} at offset: {byte_offset}")

    def skip_ws(self) -> None:
        s, i = self.s, self.i
        while i < len(s) and s[i] in self._WS:
            i += 1
        self.i = i

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else "\0"

    def parse(self) -> JsonValue:
        self.skip_ws()
        if self.i >= len(self.s):
            raise self.fail("The document is empty.")
        value = self.value()
        self.skip_ws()
        if self.i < len(self.s):
            raise self.fail("The document root must not be followed by other values.")
        return value

    def value(self) -> JsonValue:
        c = self.peek()
        if c == "n":
            return self.literal("null", None)
        if c == "t":
            return self.literal("true", True)
        if c == "f":
            return self.literal("false", False)
        if c == '"':
            return self.string()
        if c == "{":
            return self.obj()
        if c == "[":
            return self.array()
        return self.number()

    def literal(self, word: str, value: JsonValue) -> JsonValue:
        start = self.i
        if self.s.startswith(word, self.i):
            self.i += len(word)
            return value
        raise self.fail("Invalid value.", start)

    def obj(self) -> dict[str, JsonValue]:
        self.i += 1
        result: dict[str, JsonValue] = {}
        self.skip_ws()
        if self.peek() == "}":
            self.i += 1
            return result
        while True:
            if self.peek() != '"':
                raise self.fail("Missing a name for object member.")
            name = self.string()
            self.skip_ws()
            if self.peek() != ":":
                raise self.fail("Missing a colon after a name of object member.")
            self.i += 1
            self.skip_ws()
            result.setdefault(name, self.value())
            self.skip_ws()
            c = self.peek()
            if c == ",":
                self.i += 1
                self.skip_ws()
            elif c == "}":
                self.i += 1
                return result
            else:
                raise self.fail("Missing a comma or '}' after an object member.")

    def array(self) -> list[JsonValue]:
        self.i += 1
        result: list[JsonValue] = []
        self.skip_ws()
        if self.peek() == "]":
            self.i += 1
            return result
        while True:
            result.append(self.value())
            self.skip_ws()
            c = self.peek()
            if c == ",":
                self.i += 1
                self.skip_ws()
            elif c == "]":
                self.i += 1
                return result
            else:
                raise self.fail("Missing a comma or ']' after an array element.")

    _SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n",
                       "r": "\r", "t": "\t"}

    def string(self) -> str:
        self.i += 1
        s = self.s
        parts: list[str] = []
        while True:
            if self.i >= len(s):
                raise self.fail("Missing a closing quotation mark in string.")
            c = s[self.i]
            if c == '"':
                self.i += 1
                return "".join(parts)
            if c == "\\":
                escape_start = self.i
                self.i += 1
                e = self.peek()
                if e in self._SIMPLE_ESCAPES:
                    parts.append(self._SIMPLE_ESCAPES[e])
                    self.i += 1
                elif e == "u":
                    self.i += 1
                    code = self.hex4()
                    if 0xD800 <= code <= 0xDBFF:
                        if not s.startswith("\\u", self.i):
                            raise self.fail("The surrogate pair in string is invalid.")
                        self.i += 2
                        low = self.hex4()
                        if not 0xDC00 <= low <= 0xDFFF:
                            raise self.fail("The surrogate pair in string is invalid.")
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    parts.append(chr(code))
                else:
                    raise self.fail("Invalid escape character in string.", escape_start)
            elif ord(c) < 0x20:
                if c == "\0":
                    raise self.fail("Missing a closing quotation mark in string.")
                raise self.fail("Invalid encoding in string.")
            else:
                parts.append(c)
                self.i += 1

    def hex4(self) -> int:
        text = self.s[self.i : self.i + 4]
        if len(text) != 4 or any(ch not in "0123456789abcdefABCDEF" for ch in text):
            raise self.fail("Incorrect hex digit after \\u escape in string.")
        self.i += 4
        return int(text, 16)

    def number(self) -> JsonValue:
        s, start = self.s, self.i
        minus = self.peek() == "-"
        if minus:
            self.i += 1
        # kParseNanAndInfFlag: NaN, Inf, Infinity (optionally signed).
        if s.startswith("NaN", self.i):
            self.i += 3
            return math.nan
        if s.startswith("Inf", self.i):
            self.i += 8 if s.startswith("Infinity", self.i) else 3
            return -math.inf if minus else math.inf
        c = self.peek()
        if not c.isascii() or not c.isdigit():
            raise self.fail("Invalid value.", self.i)
        is_double = False
        if c == "0":
            self.i += 1
        else:
            while self.peek().isascii() and self.peek().isdigit():
                self.i += 1
        if self.peek() == ".":
            self.i += 1
            if not (self.peek().isascii() and self.peek().isdigit()):
                raise self.fail("Miss fraction part in number.")
            while self.peek().isascii() and self.peek().isdigit():
                self.i += 1
            is_double = True
        if self.peek() in "eE":
            self.i += 1
            if self.peek() in "+-":
                self.i += 1
            if not (self.peek().isascii() and self.peek().isdigit()):
                raise self.fail("Miss exponent in number.")
            while self.peek().isascii() and self.peek().isdigit():
                self.i += 1
            is_double = True
        text = s[start : self.i]
        if is_double:
            value = float(text)
            if math.isinf(value):
                raise self.fail("Number too big to be stored in double.", start)
            return value
        return _parse_int(text)


# ---------------------------------------------------------------------------------------------
# Predict request: JSON -> PredictRequest.inputs

_FLOAT_MAX_INT = 2**24 - 1
_DOUBLE_MAX_INT = 2**53 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _is_number(val: JsonValue) -> bool:
    return (isinstance(val, (int, float))) and not isinstance(val, bool)


def _type_error(val: JsonValue, dtype: int) -> ServingError:
    return _invalid(
        f"JSON Value: {json_value_to_string(val)} Type: {_json_type(val)} "
        f"is not of expected type: {dtype_name(dtype)}"
    )


def _lossy_error(val: JsonValue, target: str) -> ServingError:
    return _invalid(
        f"Cannot convert JSON value: {json_value_to_string(val)} to {target} "
        "without loss of precision."
    )


def _is_lossless(val: int | float, max_int: int, max_float: float) -> bool:
    if isinstance(val, int):
        return abs(val) <= max_int
    if not math.isfinite(val):
        return True
    return -max_float <= val <= max_float


def is_base64_object(val: JsonValue) -> bool:
    return isinstance(val, dict) and len(val) == 1 and isinstance(val.get("b64"), str)


def decode_base64_object(val: JsonValue) -> bytes:
    if not is_base64_object(val):
        raise _invalid(
            f"JSON Value: {json_value_to_string(val)} not formatted correctly for base64 data"
        )
    text = val["b64"]
    try:
        encoded = text.encode("ascii")
        if len(encoded) % 4:
            encoded += b"=" * (-len(encoded) % 4)  # absl accepts unpadded input
        return base64.b64decode(encoded, validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise _invalid("Unable to base64 decode") from None


class _Values:
    """Values collected for one TensorProto, in row-major order."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[Any] = []


def _scalar(val: JsonValue, dtype: int) -> Any:
    """AddValueToTensor: one JSON scalar -> one tensor element (or TF Serving's error)."""
    if dtype == types_pb2.DT_FLOAT:
        if not _is_number(val):
            raise _type_error(val, dtype)
        if not _is_lossless(val, _FLOAT_MAX_INT, _FLOAT32_MAX):
            raise _lossy_error(val, "float")
        return float(val)
    if dtype == types_pb2.DT_DOUBLE:
        if not _is_number(val):
            raise _type_error(val, dtype)
        if not _is_lossless(val, _DOUBLE_MAX_INT, math.inf):
            raise _lossy_error(val, "double")
        return float(val)
    if dtype in (types_pb2.DT_INT32, types_pb2.DT_INT16, types_pb2.DT_INT8, types_pb2.DT_UINT8):
        if not (type(val) is int and -(2**31) <= val < 2**31):
            raise _type_error(val, dtype)
        return val
    if dtype == types_pb2.DT_STRING:
        if not isinstance(val, str):
            raise _type_error(val, dtype)
        return _to_bytes(val)
    if dtype == types_pb2.DT_INT64:
        if not (type(val) is int and _INT64_MIN <= val <= _INT64_MAX):
            raise _type_error(val, dtype)
        return val
    if dtype == types_pb2.DT_BOOL:
        if not isinstance(val, bool):
            raise _type_error(val, dtype)
        return val
    if dtype == types_pb2.DT_UINT32:
        if not (type(val) is int and 0 <= val < 2**32):
            raise _type_error(val, dtype)
        return val
    if dtype == types_pb2.DT_UINT64:
        if not (type(val) is int and 0 <= val <= _UINT64_MAX):
            raise _type_error(val, dtype)
        return val
    raise ServingError(
        grpc.StatusCode.UNIMPLEMENTED,
        f"Conversion of JSON Value: {json_value_to_string(val)} to type: {dtype_name(dtype)}",
    )


def _fast_leaf(items: list[JsonValue], dtype: int) -> list[Any] | None:
    """The common all-plain-numbers leaf list, converted without per-element calls; None when
    any element needs the careful path (which then reports the exact error)."""
    if dtype == types_pb2.DT_FLOAT:
        if all(type(v) is float for v in items):
            if all(-_FLOAT32_MAX <= v <= _FLOAT32_MAX for v in items):
                return items
            return None
        if all(type(v) is int for v in items) and all(
            -_FLOAT_MAX_INT <= v <= _FLOAT_MAX_INT for v in items
        ):
            return [float(v) for v in items]
        return None
    ints = (types_pb2.DT_INT32, types_pb2.DT_UINT8, types_pb2.DT_INT16, types_pb2.DT_INT8)
    if (dtype in ints and all(type(v) is int for v in items)
            and all(-(2**31) <= v < 2**31 for v in items)):
        return items
    return None


def _dense_shape(val: JsonValue) -> list[int]:
    """GetDenseTensorShape: dims from the first element at each nesting level."""
    shape: list[int] = []
    while isinstance(val, list):
        shape.append(len(val))
        if not val:
            break
        val = val[0]
    return shape


def _fast_dense(val: JsonValue, shape: list[int], dtype: int) -> list[Any] | None:
    """A whole dense numeric tensor converted by numpy, when that provably gives the values the
    element-by-element walk would accept; None -> take the walk (which reports exact errors)."""
    if dtype not in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_INT32) or not shape:
        return None
    try:
        array = np.array(val)
    except (ValueError, OverflowError):
        return None
    if list(array.shape) != shape or array.dtype.kind not in "fi":
        return None
    if dtype == types_pb2.DT_INT32:
        if array.dtype.kind != "i" or array.min() < -(2**31) or array.max() >= 2**31:
            return None
        return array.ravel().tolist()
    limit = _FLOAT_MAX_INT if dtype == types_pb2.DT_FLOAT else _DOUBLE_MAX_INT
    if array.dtype.kind == "i":
        if np.abs(array).max() > limit:
            return None
        return array.astype(np.float64).ravel().tolist()
    finite = array[np.isfinite(array)]
    if dtype == types_pb2.DT_FLOAT and finite.size and np.abs(finite).max() > _FLOAT32_MAX:
        return None
    # Integer tokens mixed with decimals became floats: whole values beyond the lossless limit
    # might have been integer tokens, which TF Serving rejects; let the walk decide.
    big = np.abs(finite) > limit
    if big.any() and (finite[big] == np.round(finite[big])).any():
        return None
    return array.ravel().tolist()


def _fill_dense(val: JsonValue, shape: list[int], dtype: int, out: list[Any], fast: bool
                ) -> None:
    values = _fast_dense(val, shape, dtype) if fast else None
    if values is None:
        _fill(val, 0, shape, dtype, out)
    else:
        out.extend(values)


def _fill(val: JsonValue, level: int, shape: list[int], dtype: int, out: list[Any]) -> None:
    """FillTensorProto: walk the nested lists, checking each level's size against `shape`."""
    rank = len(shape)
    if not isinstance(val, list):
        if level != rank:
            raise _invalid(
                f"JSON Value: {json_value_to_string(val)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {rank}"
            )
        if isinstance(val, dict):
            if dtype != types_pb2.DT_STRING:
                raise _type_error(val, dtype)
            out.append(decode_base64_object(val))
        else:
            out.append(_scalar(val, dtype))
        return
    if level >= rank:
        raise _invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(val) != shape[level]:
        raise _invalid(
            f"Encountered list at unexpected size: {len(val)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    if level == rank - 1:
        fast = _fast_leaf(val, dtype)
        if fast is not None:
            out.extend(fast)
            return
    for item in val:
        _fill(item, level + 1, shape, dtype, out)


_VALUE_FIELD = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_STRING: "string_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_HALF: "half_val",
    types_pb2.DT_BFLOAT16: "half_val",
}


def _set_tensor(tensor: tensor_pb2.TensorProto, dtype: int, shape: list[int], values: list[Any]
                ) -> None:
    tensor.dtype = dtype
    del tensor.tensor_shape.dim[:]
    for size in shape:
        tensor.tensor_shape.dim.add().size = size
    field = _VALUE_FIELD.get(dtype)
    if field is not None and values:
        getattr(tensor, field).extend(values)


def _shape_text(shape: list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _status_text(err: ServingError) -> str:
    return f"{err.code.name}: {err.message}"  # absl::Status::ToString()


@dataclass
class _Instance:
    size: int
    shape: list[int]
    values: list[Any]


def _add_instance_item(
    item: JsonValue, name: str, dtypes: Mapping[str, int], seen: dict[str, _Instance],
    fast: bool,
) -> None:
    """AddInstanceItem: one instance's value for input `name`; all instances must agree."""
    if name not in dtypes:
        raise _invalid(f"JSON object: does not have named input: {name}")
    shape = _dense_shape(item)
    values: list[Any] = []
    _fill_dense(item, shape, dtypes[name], values, fast)
    previous = seen.get(name)
    if previous is None:
        seen[name] = _Instance(len(values), shape, values)
        return
    if previous.size != len(values):
        raise _invalid(f"Expecting tensor size: {previous.size} but got: {len(values)}")
    if previous.shape != shape:
        raise _invalid(
            f"Expecting shape {_shape_text(previous.shape)} but got: {_shape_text(shape)}"
        )
    previous.values.extend(values)


def _fill_from_instances(
    instances: list[JsonValue], dtypes: Mapping[str, int], fast: bool
) -> dict[str, tensor_pb2.TensorProto]:
    if not isinstance(instances[0], dict) and len(dtypes) > 1:
        raise _invalid(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )

    def is_element_object(v: JsonValue) -> bool:
        return isinstance(v, dict) and not is_base64_object(v)

    objects = is_element_object(instances[0])
    input_names = sorted(dtypes)
    seen: dict[str, _Instance] = {}
    for index, element in enumerate(instances):
        if objects:
            if not is_element_object(element):
                raise _invalid(f"Expecting object but got list at item {index} of input list")
            for name, item in element.items():
                try:
                    _add_instance_item(item, name, dtypes, seen, fast)
                except ServingError as err:
                    raise _invalid(
                        f"Failed to process element: {index} key: {name} of 'instances' list. "
                        f"Error: {_status_text(err)}"
                    ) from None
            if sorted(element) != input_names:
                raise _invalid(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{json_value_to_string(element)} must only have keys: "
                    + ",".join(input_names)
                )
        else:
            if is_element_object(element):
                raise _invalid(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            try:
                _add_instance_item(element, input_names[0], dtypes, seen, fast)
            except ServingError as err:
                raise _invalid(
                    f"Failed to process element: {index} of 'instances' list. "
                    f"Error: {_status_text(err)}"
                ) from None
    tensors: dict[str, tensor_pb2.TensorProto] = {}
    for name, instance in seen.items():
        tensor = tensor_pb2.TensorProto()
        _set_tensor(tensor, dtypes[name], [len(instances), *instance.shape], instance.values)
        tensors[name] = tensor
    return tensors


def _columnar_tensor(val: JsonValue, dtype: int, fast: bool) -> tensor_pb2.TensorProto:
    shape = _dense_shape(val)
    values: list[Any] = []
    _fill_dense(val, shape, dtype, values, fast)
    tensor = tensor_pb2.TensorProto()
    _set_tensor(tensor, dtype, shape, values)
    return tensor


def _fill_from_inputs(
    inputs: JsonValue, dtypes: Mapping[str, int], fast: bool
) -> dict[str, tensor_pb2.TensorProto]:
    names = sorted(dtypes)
    if not isinstance(inputs, dict) or is_base64_object(inputs):
        if len(names) > 1:
            raise _invalid(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        return {names[0]: _columnar_tensor(inputs, dtypes[names[0]], fast)}
    tensors = {}
    for name in names:
        if name not in inputs:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = _columnar_tensor(inputs[name], dtypes[name], fast)
    return tensors


def signature_name_of(doc: Mapping[str, JsonValue]) -> str:
    """FillSignature: the optional `signature_name` member ("" when absent)."""
    if "signature_name" not in doc:
        return ""
    name = doc["signature_name"]
    if not isinstance(name, str):
        raise _invalid(
            f"JSON Value: {json_value_to_string(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


def fill_predict_inputs(
    doc: Mapping[str, JsonValue],
    signature_name: str,
    input_dtypes: Callable[[str], Mapping[str, int]],
) -> tuple[dict[str, tensor_pb2.TensorProto], Format]:
    """FillPredictRequestFromJson after parsing: the input tensors and the request format.

    `input_dtypes(signature_name)` returns the signature's input alias -> DataType map (and raises
    TF Serving's error for an unknown model or signature)."""
    dtypes = input_dtypes(signature_name)
    fast = not getattr(doc, "may_have_bools", True)
    if not dtypes:
        raise _invalid(
            f"Failed to get input map for signature: {signature_name or 'DEFAULT'}"
        )
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise _invalid(
            f"JSON Value: {json_value_to_string(doc)} Not formatted correctly expecting only "
            "one of 'inputs' or 'instances' keys to exist "
        )
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise _invalid(
                f"JSON Value: {json_value_to_string(doc)} Excepting 'instances' to be an "
                "list/array"
            )
        if not instances:
            raise _invalid(
                f"JSON Value: {json_value_to_string(doc)} No values in 'instances' array"
            )
        return _fill_from_instances(instances, dtypes, fast), "row"
    if has_inputs:
        return _fill_from_inputs(doc["inputs"], dtypes, fast), "columnar"
    raise _invalid("Missing 'inputs' or 'instances' key")


def input_dtypes_of(signature: meta_graph_pb2.SignatureDef) -> dict[str, int]:
    return {alias: info.dtype for alias, info in signature.inputs.items()}


# ---------------------------------------------------------------------------------------------
# Predict response: PredictResponse.outputs -> JSON

def tensor_values(tensor: tensor_pb2.TensorProto) -> tuple[list[int], list[Any]]:
    """Shape and flat row-major values of a TensorProto (typed fields or tensor_content, with
    TF's fill rules for short typed fields)."""
    shape = [d.size for d in tensor.tensor_shape.dim]
    count = int(np.prod(shape)) if shape else 1
    dtype = tensor.dtype
    if dtype == types_pb2.DT_STRING:
        values: list[Any] = list(tensor.string_val)
        fill: Any = b""
    elif tensor.tensor_content and dtype in _NUMPY_DTYPES:
        decoded: np.ndarray[Any, Any] = np.frombuffer(
            tensor.tensor_content, dtype=_NUMPY_DTYPES[dtype]
        )
        return shape, decoded.tolist()[:count]
    else:
        field = _VALUE_FIELD.get(dtype)
        values = list(getattr(tensor, field)) if field else []
        fill = False if dtype == types_pb2.DT_BOOL else 0
    if len(values) >= count:
        return shape, values[:count]
    pad = values[-1] if values else fill
    return shape, values + [pad] * (count - len(values))


_NUMPY_DTYPES = {
    types_pb2.DT_FLOAT: np.float32,
    types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT16: np.int16,
    types_pb2.DT_INT8: np.int8,
    types_pb2.DT_UINT8: np.uint8,
    types_pb2.DT_UINT16: np.uint16,
    types_pb2.DT_INT64: np.int64,
    types_pb2.DT_BOOL: np.bool_,
    types_pb2.DT_UINT32: np.uint32,
    types_pb2.DT_UINT64: np.uint64,
}


def _tokens(values: list[Any], dtype: int, as_b64: bool) -> list[bytes]:
    """AddSingleValueAndAdvance for a run of values."""
    if dtype == types_pb2.DT_FLOAT:
        return [format_decimal(v).encode() for v in values]
    if dtype == types_pb2.DT_DOUBLE:
        return [format_decimal(v, double=True).encode() for v in values]
    if dtype in (types_pb2.DT_INT32, types_pb2.DT_INT16, types_pb2.DT_INT8, types_pb2.DT_UINT8,
                 types_pb2.DT_INT64, types_pb2.DT_UINT32, types_pb2.DT_UINT64):
        return [str(int(v)).encode() for v in values]
    if dtype == types_pb2.DT_BOOL:
        return [b"true" if v else b"false" for v in values]
    if dtype == types_pb2.DT_STRING:
        if as_b64:
            return [b'{"b64": ' + quote_bytes(base64.b64encode(v)) + b"}" for v in values]
        return [quote_bytes(v) for v in values]
    raise _invalid(f"Failed to write JSON value for tensor type: {dtype_name(dtype)}")


class _TensorWriter:
    """AddTensorValues over one tensor, advancing through its flat values."""

    def __init__(self, name: str, tensor: tensor_pb2.TensorProto) -> None:
        self.dtype = tensor.dtype
        self.shape, self.values = tensor_values(tensor)
        # A tensor named "*_bytes" holding strings is written as {"b64": ...}.
        self.as_b64 = self.dtype == types_pb2.DT_STRING and name.endswith("_bytes")
        self.offset = 0

    def _take(self, count: int) -> list[bytes]:
        chunk = self.values[self.offset : self.offset + count]
        tokens = _tokens(chunk, self.dtype, self.as_b64)
        self.offset += count
        return tokens

    def write(self, writer: PrettyWriter, dim: int) -> None:
        rank = len(self.shape)
        if dim > rank - 1:
            if self.as_b64:
                # The b64 object goes through the writer so its layout follows rapidjson.
                raw = self.values[self.offset]
                self.offset += 1
                writer.start_object()
                writer.key("b64")
                writer.string(base64.b64encode(raw))
                writer.end_object()
            else:
                writer.raw(self._take(1)[0])
            return
        writer.start_array()
        if dim == rank - 1 and not self.as_b64:
            writer.raw_array_items(self._take(self.shape[dim]))
        else:
            for _ in range(self.shape[dim]):
                self.write(writer, dim + 1)
        writer.end_array()


def predict_response_json(outputs: Mapping[str, tensor_pb2.TensorProto], fmt: Format) -> bytes:
    """MakeJsonFromTensors: `{"predictions": ...}` for row requests, `{"outputs": ...}` for
    columnar ones."""
    if not outputs:
        raise _invalid("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    writers = {name: _TensorWriter(name, outputs[name]) for name in names}
    # Fail on unsupported dtypes up front, as TF Serving does on the first value it writes.
    for w in writers.values():
        if w.dtype not in _NUMPY_DTYPES and w.dtype != types_pb2.DT_STRING:
            raise _invalid(f"Failed to write JSON value for tensor type: {dtype_name(w.dtype)}")
    writer = PrettyWriter()
    writer.start_object()
    if fmt == "row":
        batch_size = 0
        for name in names:
            shape = writers[name].shape
            if not shape:
                raise _invalid(f"Tensor name: {name} has no shape information ")
            if shape[0] < 1:
                raise _invalid(f"Tensor name: {name} has invalid batch size: {shape[0]}")
            if batch_size and batch_size != shape[0]:
                raise _invalid(
                    f"Tensor name: {name} has inconsistent batch size: {shape[0]} "
                    f"expecting: {batch_size}"
                )
            batch_size = shape[0]
        writer.key("predictions")
        writer.start_array()
        objects = len(names) > 1
        for _ in range(batch_size):
            if objects:
                writer.start_object()
            writer.single_line_arrays = True
            for name in names:
                if objects:
                    writer.key(name)
                writers[name].write(writer, 1)
            writer.single_line_arrays = False
            if objects:
                writer.end_object()
        writer.end_array()
    else:
        writer.key("outputs")
        objects = len(names) > 1
        if objects:
            writer.start_object()
        for name in names:
            if objects:
                writer.key(name)
            writers[name].write(writer, 0)
        if objects:
            writer.end_object()
    writer.end_object()
    return writer.getvalue()


# ---------------------------------------------------------------------------------------------
# Classify / Regress

def _feature_kind_error(name: str, feature: feature_pb2.Feature) -> ServingError:
    kind = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}.get(
        feature.WhichOneof("kind") or "", "UNKNOWN"
    )
    return _invalid(f"Unexpected element type in feature: {name} expecting type: {kind}")


def _add_to_feature(val: JsonValue, name: str, feature: feature_pb2.Feature) -> None:
    """AddValueToFeature: the JSON token decides the feature kind; all values must agree."""
    kind = feature.WhichOneof("kind")

    def check(expected: str) -> None:
        if kind is not None and kind != expected:
            raise _feature_kind_error(name, feature)

    if val is None or isinstance(val, list):
        raise _invalid(
            f"Feature: {name} has element with unexpected JSON type: {_json_type(val)}"
        )
    if isinstance(val, bool):
        check("int64_list")
        feature.int64_list.value.append(1 if val else 0)
    elif isinstance(val, dict):
        if not is_base64_object(val):
            raise _invalid(
                f"Feature: {name} has element with unexpected JSON type: {_json_type(val)}"
            )
        check("bytes_list")
        feature.bytes_list.value.append(decode_base64_object(val))
    elif isinstance(val, str):
        check("bytes_list")
        feature.bytes_list.value.append(_to_bytes(val))
    elif isinstance(val, float):
        check("float_list")
        if not _is_lossless(val, _FLOAT_MAX_INT, _FLOAT32_MAX):
            raise _lossy_error(val, "float")
        feature.float_list.value.append(val)
    else:
        check("int64_list")
        if val > _INT64_MAX:
            raise _invalid(f"Feature: {name} has uint64 element. Only int64 is supported.")
        feature.int64_list.value.append(val)


def _example_from_json(val: JsonValue, example: example_pb2.Example) -> None:
    if not isinstance(val, dict):
        raise _invalid(f"Example must be JSON object but got JSON {_json_type(val)}")
    for name, content in val.items():
        feature = feature_pb2.Feature()
        for item in content if isinstance(content, list) else [content]:
            _add_to_feature(item, name, feature)
        example.features.feature[name].CopyFrom(feature)


def classify_regress_input(doc: Mapping[str, JsonValue]) -> input_pb2.Input:
    """FillClassifyRegressRequestFromJson after parsing and signature_name: the tf.Example Input
    (`context` -> ExampleListWithContext)."""
    result = input_pb2.Input()
    has_context = "context" in doc
    if has_context:
        _example_from_json(doc["context"], result.example_list_with_context.context)
    if "examples" not in doc:
        raise _invalid(
            f"JSON Value: {json_value_to_string(doc)} When method is classify, key 'examples' "
            "is expected and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise _invalid(
            f"JSON Value: {json_value_to_string(doc)} Expecting 'examples' value to be an "
            "list/array"
        )
    if not examples:
        raise _invalid(f"JSON Value: {json_value_to_string(doc)} 'examples' value is an empty "
                       "array")
    for item in examples:
        target = (result.example_list_with_context.examples if has_context
                  else result.example_list.examples)
        _example_from_json(item, target.add())
    return result


def classification_request(
    body: bytes, model_spec: Any
) -> classification_pb2.ClassificationRequest:
    doc = parse_json(body)
    request = classification_pb2.ClassificationRequest()
    request.model_spec.CopyFrom(model_spec)
    request.model_spec.signature_name = signature_name_of(doc)
    request.input.CopyFrom(classify_regress_input(doc))
    return request


def regression_request(body: bytes, model_spec: Any) -> regression_pb2.RegressionRequest:
    doc = parse_json(body)
    request = regression_pb2.RegressionRequest()
    request.model_spec.CopyFrom(model_spec)
    request.model_spec.signature_name = signature_name_of(doc)
    request.input.CopyFrom(classify_regress_input(doc))
    return request


def classification_json(result: classification_pb2.ClassificationResult) -> bytes:
    if not result.classifications:
        raise _invalid("Cannot convert empty ClassificationResults to JSON")
    writer = PrettyWriter()
    writer.start_object()
    writer.key("results")
    writer.start_array()
    for classifications in result.classifications:
        writer.single_line_arrays = True
        writer.start_array()
        for cls in classifications.classes:
            writer.start_array()
            writer.string(_to_bytes(cls.label))
            writer.raw(format_decimal(cls.score).encode())
            writer.end_array()
        writer.end_array()
        writer.single_line_arrays = False
    writer.end_array()
    writer.end_object()
    return writer.getvalue()


def regression_json(result: regression_pb2.RegressionResult) -> bytes:
    if not result.regressions:
        raise _invalid("Cannot convert empty RegressionResults to JSON")
    writer = PrettyWriter()
    writer.start_object()
    writer.key("results")
    writer.single_line_arrays = True
    writer.start_array()
    writer.raw_array_items([format_decimal(r.value).encode() for r in result.regressions])
    writer.end_array()
    writer.end_object()
    return writer.getvalue()


# ---------------------------------------------------------------------------------------------
# Status / metadata (protobuf JSON mapping, laid out as TF Serving's C++ printer does)

def _ordered(descriptor: Descriptor, obj: Any) -> Any:
    """Order an object from MessageToDict by field number, as protobuf's C++ printer does
    (Python's puts unset-but-printed fields last); map keys sorted."""
    if not isinstance(obj, dict) or descriptor.full_name.startswith("google.protobuf."):
        return obj
    result: dict[str, Any] = {}
    for field in sorted(descriptor.fields, key=lambda f: f.number):
        name = next((n for n in (field.name, field.json_name) if n in obj), None)
        if name is None:
            continue
        value = obj[name]
        message = field.message_type
        if message is not None:
            if message.GetOptions().map_entry:
                value_type = message.fields_by_name["value"].message_type
                value = {k: (_ordered(value_type, v) if value_type else v)
                         for k, v in sorted(value.items())}
            elif field.is_repeated:
                value = [_ordered(message, v) for v in value]
            else:
                value = _ordered(message, value)
        result[name] = value
    return result


def _proto_json(message: Any, *, preserve_names: bool) -> str:
    obj = json_format.MessageToDict(
        message,
        preserving_proto_field_name=preserve_names,
        always_print_fields_with_no_presence=True,
    )
    # add_whitespace=true: one-space indent, and a trailing newline after the root object.
    return json.dumps(_ordered(message.DESCRIPTOR, obj), indent=1, ensure_ascii=False) + "\n"


def status_json(response: get_model_status_pb2.GetModelStatusResponse) -> bytes:
    return _proto_json(response, preserve_names=False).encode()


def metadata_json(response: get_model_metadata_pb2.GetModelMetadataResponse) -> bytes:
    """TF Serving prints model_spec and the unpacked SignatureDefMap separately and splices them
    into one document (hence `"signature_def": {"signature_def": ...}`)."""
    if "signature_def" not in response.metadata:
        raise ServingError(
            grpc.StatusCode.INTERNAL,
            "Failed to find 'signature_def' key in the GetModelMetadataResponse metadata map.",
        )
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    if not response.metadata["signature_def"].Unpack(signature_defs):
        raise ServingError(
            grpc.StatusCode.INTERNAL, "Failed to unpack 'Any' object to 'SignatureDefMap'."
        )
    model_spec = _proto_json(response.model_spec, preserve_names=True)
    signatures = _proto_json(signature_defs, preserve_names=True)
    text = (
        "{\n"
        f'"model_spec":{model_spec},\n'
        f'"metadata": {{"signature_def": {signatures}}}\n'
        "}\n"
    )
    return text.encode()


def signature_defs_of(
    response: get_model_metadata_pb2.GetModelMetadataResponse,
) -> Mapping[str, meta_graph_pb2.SignatureDef]:
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_defs)
    result: Mapping[str, meta_graph_pb2.SignatureDef] = signature_defs.signature_def
    return result


# ---------------------------------------------------------------------------------------------
# Errors

def error_json(message: str) -> bytes:
    """MakeJsonFromStatus: `{"error": "<message>"}`, pretty printed; nothing for an empty
    message."""
    if not message:
        return b""
    writer = PrettyWriter()
    writer.start_object()
    writer.key("error")
    writer.string(_to_bytes(message))
    writer.end_object()
    return writer.getvalue()
