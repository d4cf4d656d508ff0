"""rapidjson's writer, as TF Serving uses it for REST bodies, in Python.

TF Serving writes every REST body with rapidjson's PrettyWriter (`util/json_tensor.cc`): values
in, the writer's bytes out (4-space indent, single-line arrays, Grisu2 doubles, TF Serving's
WriteDecimal), plus the value helpers its error messages use. Its parser is ``json_reader``.
It knows nothing of tensors or messages, so it imports no TensorFlow: ``tensors``, ``examples``
and ``handler`` build TF Serving's documents on top of it.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import numpy as np

from xception_serving.runtime.errors import invalid

JsonValue = Any  # what json.loads returns (dict / list / str / int / float / bool / None)


# ---------------------------------------------------------------------------------------------
# rapidjson PrettyWriter emulation (4-space indent, optional single-line arrays).

_ESCAPES = {
    0x22: b'\\"',
    0x5C: b"\\\\",
    0x08: b"\\b",
    0x0C: b"\\f",
    0x0A: b"\\n",
    0x0D: b"\\r",
    0x09: b"\\t",
}
_NEEDS_ESCAPE = re.compile(rb'[\x00-\x1f"\\]')


def _escape_match(match: re.Match[bytes]) -> bytes:
    byte = match.group()[0]
    return _ESCAPES.get(byte) or b"\\u00%02X" % byte  # rapidjson: upper-case hex


def quote_bytes(raw: bytes) -> bytes:
    """A JSON string as rapidjson writes it: raw bytes kept (no UTF-8 check), controls escaped."""
    return b'"' + _NEEDS_ESCAPE.sub(_escape_match, raw) + b'"'


def to_bytes(text: str) -> bytes:
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
        self._out.append(quote_bytes(name if isinstance(name, bytes) else to_bytes(name)))

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
            self.string(to_bytes(val))
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

    def size(self) -> int:
        return sum(len(chunk) for chunk in self._out)


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


# TF Serving 2.18+ (kMaxJsonDebugStringBytes): a value quoted in an error message stops at the
# first token that would start past this many bytes, so a huge body cannot make a huge message
# (an 11 MB body quoted whole made a 28 MB message and took 4 s).
MAX_DEBUG_STRING_BYTES = 256


def json_value_to_string(val: JsonValue) -> str:
    """TF Serving's JsonValueToString (used inside error messages), cut as its
    JsonValueToDebugString cuts it."""
    if isinstance(val, float):
        if math.isfinite(val) and abs(val) > 3.4028234e38:
            return format_decimal(val, double=True)
        return format_decimal(float(np.float32(val)) if math.isfinite(val) else val)
    writer = PrettyWriter()
    brackets = {
        "start_object": writer.start_object,
        "end_object": writer.end_object,
        "start_array": writer.start_array,
        "end_array": writer.end_array,
    }
    for kind, item in _accept_events(val):  # JsonWriterWithLimit: each call only while short
        if writer.size() >= MAX_DEBUG_STRING_BYTES:
            break
        if kind in brackets:
            brackets[kind]()
        else:
            (writer.key if kind == "key" else writer.value)(item)
    return writer.getvalue().decode("utf-8", "replace")


def _accept_events(val: JsonValue) -> Iterator[tuple[str, JsonValue]]:
    """rapidjson's Value::Accept as a lazy event stream (no recursion, nothing unread is
    visited): ("start_object"|"end_object"|"start_array"|"end_array"|"key"|"scalar", item)."""
    pending: list[Iterator[tuple[str, JsonValue]]] = [iter([("value", val)])]
    while pending:
        event = next(pending[-1], None)
        if event is None:
            pending.pop()
            continue
        kind, item = event
        if kind != "value":
            yield event
        elif isinstance(item, dict):
            yield "start_object", None
            members = (
                (e, v) for name, value in item.items() for e, v in (("key", name), ("value", value))
            )
            pending.append(itertools.chain(members, [("end_object", None)]))
        elif isinstance(item, list):
            yield "start_array", None
            elements = (("value", element) for element in item)
            pending.append(itertools.chain(elements, [("end_array", None)]))
        else:
            yield "scalar", item


def list_member(
    doc: Mapping[str, JsonValue], key: str, not_list: str, empty: str
) -> list[JsonValue]:
    """`doc[key]`, which must be a non-empty array: TF Serving's `instances` / `examples` checks,
    failing with `JSON Value: <doc> <not_list|empty>`."""
    value = doc[key]
    if not isinstance(value, list):
        raise invalid(f"JSON Value: {json_value_to_string(doc)} {not_list}")
    if not value:
        raise invalid(f"JSON Value: {json_value_to_string(doc)} {empty}")
    return value


def json_type(val: JsonValue) -> str:
    if val is None or isinstance(val, bool):
        return {None: "Null", True: "True", False: "False"}[val]
    for kind, name in ((dict, "Object"), (list, "Array"), (str, "String")):
        if isinstance(val, kind):
            return name
    return "Number"


# The integer ranges rapidjson keeps exactly (larger integers become doubles).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1
