"""rapidjson, as TF Serving uses it for REST bodies: its PrettyWriter and its parser, in Python.

TF Serving writes every REST body with rapidjson's PrettyWriter (`util/json_tensor.cc`) and parses
every request with rapidjson (NaN/Infinity tokens allowed). This module is that layer alone: bytes
in, a parsed document or rapidjson's exact error message and byte offset out; values in, the
writer's bytes out (4-space indent, single-line arrays, Grisu2 doubles, TF Serving's WriteDecimal).
It knows nothing of tensors or messages, so it imports no TensorFlow: `rest_tensors`,
`rest_examples` and `rest` build TF Serving's documents on top of it.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import numpy as np

from xception_serving.errors import ServingError, invalid

JsonValue = Any  # what json.loads returns (dict / list / str / int / float / bool / None)


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
    brackets = {"start_object": writer.start_object, "end_object": writer.end_object,
                "start_array": writer.start_array, "end_array": writer.end_array}
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
            members = ((e, v) for name, value in item.items()
                       for e, v in (("key", name), ("value", value)))
            pending.append(itertools.chain(members, [("end_object", None)]))
        elif isinstance(item, list):
            yield "start_array", None
            elements = (("value", element) for element in item)
            pending.append(itertools.chain(elements, [("end_array", None)]))
        else:
            yield "scalar", item


def list_member(doc: Mapping[str, JsonValue], key: str, not_list: str, empty: str
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


# ---------------------------------------------------------------------------------------------
# Parsing, with rapidjson's error messages.

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1

# How deeply arrays and objects may nest. TF Serving (2.18+) parses iteratively and sets no
# limit; here the standard parser, the tensor walk and the error-message writer recurse once per
# level, so a bound well inside Python's recursion limit keeps a hostile body away from them.
# 512 is twice what a tensor can use (TensorFlow's rank limit is 254 dimensions), so a tensor
# of too many dimensions still gets TF Serving's own answer.
MAX_JSON_DEPTH = 512


def _parse_int(text: str) -> int | float:
    # rapidjson keeps integers that fit int64/uint64; anything larger becomes a double (and
    # fails past the double range). 20 characters hold every int64/uint64 and stay far from
    # Python's 4300-digit conversion limit.
    if len(text) <= 20:
        value = int(text)
        if INT64_MIN <= value <= UINT64_MAX:
            return value
    double = float(text)
    if math.isinf(double):
        raise ValueError("number too big")  # the exact parser reports it
    return double


def _first_member_wins(pairs: list[tuple[str, JsonValue]]) -> dict[str, JsonValue]:
    # rapidjson's FindMember returns the first of duplicate keys.
    obj: dict[str, JsonValue] = {}
    for name, value in pairs:
        obj.setdefault(name, value)
    return obj


class Document(dict[str, JsonValue]):
    """The parsed top-level object, plus whether the body could hold true/false tokens (when it
    cannot, numeric arrays may take the vectorized path: numpy would silently turn bools into
    numbers)."""

    may_have_bools: bool = True


# A \u escape of a surrogate that is not part of a pair (a high one not followed by a low one,
# or a low one alone). Python's parser accepts them; rapidjson refuses the first and keeps the
# second as bytes, so such bodies take the exact parser.
_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def parse_json(body: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Document:
    """Parse a request body as TF Serving's ParseJson does (top level must be an object), with
    the nesting limit `max_depth`."""
    if not body:
        raise invalid("JSON Parse error: The document is empty")
    text = body.decode("utf-8", "surrogateescape")
    if nests_deeper_than(body, max_depth) or _LONE_SURROGATE.search(body):
        doc = _RapidJsonParser(text, max_depth).parse()
    else:
        try:
            doc = json.loads(
                text, parse_int=_parse_int, object_pairs_hook=_first_member_wins,
                parse_constant=_CONSTANTS.__getitem__,
            )
        except (ValueError, RecursionError):
            doc = _RapidJsonParser(text, max_depth).parse()  # rapidjson's error, or its Inf
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {json_value_to_string(doc)} Is not object")
    document = Document(doc)
    document.may_have_bools = b"true" in body or b"false" in body
    return document


_CONSTANTS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

# The nesting scan keeps only brackets and quotes (bytes.translate runs at memory speed).
_NOT_NESTING = bytes(b for b in range(256) if b not in b'[]{}"')
_ESCAPE = re.compile(rb"\\[\s\S]")
_SCAN_CHUNK = 1 << 22
_OPEN_MARKS, _CLOSE_MARKS, _QUOTE = (ord("["), ord("{")), (ord("]"), ord("}")), ord('"')


def nests_deeper_than(body: bytes, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than `limit` anywhere in `body` (syntax
    aside); vectorized, so a large numeric body costs a fraction of its parse."""
    if b"\\" in body:  # an escaped quote does not end a string: drop every escape pair
        body = _ESCAPE.sub(b"", body)
    kept = body.translate(None, _NOT_NESTING)
    if len(kept) <= limit:
        return False
    marks = np.frombuffer(kept, dtype=np.uint8)
    depth, in_string = 0, 0
    for start in range(0, marks.size, _SCAN_CHUNK):
        chunk = marks[start : start + _SCAN_CHUNK]
        quotes = np.cumsum(chunk == _QUOTE, dtype=np.int64) + in_string
        outside = (quotes & 1) == 0
        steps = np.isin(chunk, _OPEN_MARKS).astype(np.int64)
        steps -= np.isin(chunk, _CLOSE_MARKS)
        levels = depth + np.cumsum(steps * outside, dtype=np.int64)
        if int(levels.max()) > limit:
            return True
        depth, in_string = int(levels[-1]), int(quotes[-1] & 1)
    return False


class _RapidJsonParser:
    """rapidjson's iterative parser (as TF Serving runs it: kParseIterativeFlag,
    kParseNanAndInfFlag, kParseStopWhenDoneFlag), failing where it fails with its message and
    offset, plus our nesting limit. Used when the fast standard parser rejected the text (or
    for what it accepts and rapidjson does not), so it favours exactness over speed."""

    _WS = " \t\n\r"

    def __init__(self, text: str, max_depth: int = MAX_JSON_DEPTH) -> None:
        self.s = text
        self.i = 0
        self.max_depth = max_depth

    def fail(self, message: str, offset: int | None = None) -> ServingError:
        at = self.i if offset is None else offset
        # rapidjson offsets count bytes, not characters.
        byte_offset = len(to_bytes(self.s[:at]))
        return invalid(f"JSON Parse error: {message} at offset: {byte_offset}")

    def skip_ws(self) -> None:
        s, i = self.s, self.i
        while i < len(s) and s[i] in self._WS:
            i += 1
        self.i = i

    def peek(self) -> str:
        # The iterative parser stops at a NUL byte as at the end of the input.
        return self.s[self.i] if self.i < len(self.s) else "\0"

    def parse(self) -> JsonValue:
        """One root value; what follows it is not read (kParseStopWhenDoneFlag)."""
        self.skip_ws()
        if self.peek() == "\0":
            raise self.fail("The document is empty.")
        stack: list[list[JsonValue] | dict[str, JsonValue]] = []
        keys: list[str] = []  # the pending member name of each open object, in order
        while True:
            value = self._open_or_scalar(stack, keys)
            if value is _OPENED:
                continue
            while True:  # attach the value, then close every container it completes
                if not stack:
                    return value
                parent = stack[-1]
                if isinstance(parent, list):
                    parent.append(value)
                else:
                    parent.setdefault(keys.pop(), value)
                if not self._next_member(parent, keys):
                    break
                value = stack.pop()

    def _open_or_scalar(self, stack: list[Any], keys: list[str]) -> JsonValue:
        """At a value: a scalar, an empty container, or _OPENED after pushing a container."""
        c = self.peek()
        if c not in "[{":
            return self.scalar()
        if len(stack) >= self.max_depth:
            raise self.fail("Nesting of arrays and objects is deeper than the limit of "
                            f"{self.max_depth} levels.")
        self.i += 1
        self.skip_ws()
        close = "]" if c == "[" else "}"
        if self.peek() == close:
            self.i += 1
            return [] if c == "[" else {}
        stack.append([] if c == "[" else {})
        if c == "{":
            keys.append(self.member_name())
        return _OPENED

    def _next_member(self, parent: list[JsonValue] | dict[str, JsonValue], keys: list[str]
                     ) -> bool:
        """After an element or member: True at the closing bracket (consumed), False after a
        comma (and, in an object, the next name), else rapidjson's error."""
        self.skip_ws()
        c = self.peek()
        in_array = isinstance(parent, list)
        if c == ",":
            self.i += 1
            self.skip_ws()
            if not in_array:
                keys.append(self.member_name())
            return False
        if c == ("]" if in_array else "}"):
            self.i += 1
            return True
        raise self.fail("Missing a comma or ']' after an array element." if in_array
                        else "Missing a comma or '}' after an object member.")

    def member_name(self) -> str:
        """`"name" :` with the whitespace after it."""
        if self.peek() != '"':
            raise self.fail("Missing a name for object member.")
        name = self.string()
        self.skip_ws()
        if self.peek() != ":":
            raise self.fail("Missing a colon after a name of object member.")
        self.i += 1
        self.skip_ws()
        return name

    _LITERALS = {"n": ("null", None), "t": ("true", True), "f": ("false", False)}

    def scalar(self) -> JsonValue:
        c = self.peek()
        if c in self._LITERALS:
            return self.literal(*self._LITERALS[c])
        return self.string() if c == '"' else self.number()

    def literal(self, word: str, value: JsonValue) -> JsonValue:
        # ParseNull/True/False consume matching letters and fail just past the last match.
        matched = 1
        while matched < len(word) and self.s.startswith(word[matched], self.i + matched):
            matched += 1
        self.i += matched
        if matched < len(word):
            raise self.fail("Invalid value.")
        return value

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
                parts.append(self.escape())
            elif ord(c) < 0x20:
                if c == "\0":
                    raise self.fail("Missing a closing quotation mark in string.")
                raise self.fail("Invalid encoding in string.")
            else:
                parts.append(c)
                self.i += 1

    def escape(self) -> str:
        """One escape sequence; its errors are reported at its backslash, as rapidjson does."""
        start = self.i
        self.i += 1
        e = self.peek()
        if e in self._SIMPLE_ESCAPES:
            self.i += 1
            return self._SIMPLE_ESCAPES[e]
        if e != "u":
            raise self.fail("Invalid escape character in string.", start)
        self.i += 1
        code = self.hex4(start)
        if 0xD800 <= code <= 0xDBFF:
            if not self.s.startswith("\\u", self.i):
                raise self.fail("The surrogate pair in string is invalid.", start)
            self.i += 2
            low = self.hex4(start)
            if not 0xDC00 <= low <= 0xDFFF:
                raise self.fail("The surrogate pair in string is invalid.", start)
            return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00))
        if 0xDC00 <= code <= 0xDFFF:
            # rapidjson 1.1.0 writes a lone low surrogate as its three UTF-8-style bytes; keep
            # those bytes (as surrogateescape characters, like any byte that is not UTF-8).
            return chr(code).encode("utf-8", "surrogatepass").decode("utf-8", "surrogateescape")
        return chr(code)

    def hex4(self, escape_start: int) -> int:
        text = self.s[self.i : self.i + 4]
        if len(text) != 4 or any(ch not in "0123456789abcdefABCDEF" for ch in text):
            raise self.fail("Incorrect hex digit after \\u escape in string.", escape_start)
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
            self._digits()
        if self.peek() == ".":
            self.i += 1
            if not self._digits():
                raise self.fail("Miss fraction part in number.")
            is_double = True
        if self.peek() in "eE":
            self.i += 1
            if self.peek() in "+-":
                self.i += 1
            if not self._digits():
                raise self.fail("Miss exponent in number.")
            is_double = True
        text = s[start : self.i]
        try:
            value = float(text) if is_double else _parse_int(text)
        except ValueError:
            value = math.inf
        if isinstance(value, float) and math.isinf(value):
            raise self.fail("Number too big to be stored in double.", start)
        return value

    def _digits(self) -> bool:
        """Consume ASCII digits; whether there was at least one."""
        s, i = self.s, self.i
        while i < len(s) and s[i].isascii() and s[i].isdigit():
            i += 1
        found = i > self.i
        self.i = i
        return found


_OPENED: Any = object()  # _open_or_scalar pushed a container: parse its first value next
