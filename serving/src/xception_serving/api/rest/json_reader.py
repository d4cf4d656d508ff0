"""rapidjson's parser, as TF Serving uses it for REST request bodies, in Python.

TF Serving parses every request with rapidjson (NaN/Infinity tokens allowed): bytes in, a parsed
document or rapidjson's exact error message and byte offset out. Ordinary bodies take Python's
json module; bodies it would read differently (lone surrogates, nesting past the limit, ...)
take an exact, iterative reimplementation of rapidjson's reader.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

from xception_serving.api.rest.json_text import (
    INT64_MIN,
    UINT64_MAX,
    JsonValue,
    json_value_to_string,
    to_bytes,
)
from xception_serving.runtime.errors import ServingError, invalid

# ---------------------------------------------------------------------------------------------
# Parsing, with rapidjson's error messages.

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
                text,
                parse_int=_parse_int,
                object_pairs_hook=_first_member_wins,
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
            raise self.fail(
                "Nesting of arrays and objects is deeper than the limit of "
                f"{self.max_depth} levels."
            )
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

    def _next_member(self, parent: list[JsonValue] | dict[str, JsonValue], keys: list[str]) -> bool:
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
        raise self.fail(
            "Missing a comma or ']' after an array element."
            if in_array
            else "Missing a comma or '}' after an object member."
        )

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

    _SIMPLE_ESCAPES = {
        '"': '"',
        "\\": "\\",
        "/": "/",
        "b": "\b",
        "f": "\f",
        "n": "\n",
        "r": "\r",
        "t": "\t",
    }

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
        """A number token, read part by part as rapidjson's ParseNumber does: sign, NaN/Inf,
        integer, fraction, exponent; then its value (int64/uint64 or double)."""
        start = self.i
        minus = self.peek() == "-"
        if minus:
            self.i += 1
        special = self._nan_or_inf(minus)
        if special is not None:
            return special
        self._integer_part()
        fraction = self._fraction()
        exponent = self._exponent()
        return self._number_value(start, is_double=fraction or exponent)

    def _nan_or_inf(self, minus: bool) -> float | None:
        """kParseNanAndInfFlag: NaN, Inf, Infinity (after the optional sign)."""
        s = self.s
        if s.startswith("NaN", self.i):
            self.i += 3
            return math.nan
        if s.startswith("Inf", self.i):
            self.i += 8 if s.startswith("Infinity", self.i) else 3
            return -math.inf if minus else math.inf
        return None

    def _integer_part(self) -> None:
        """A lone 0 or a run of digits; anything else is not a value."""
        c = self.peek()
        if not c.isascii() or not c.isdigit():
            raise self.fail("Invalid value.", self.i)
        if c == "0":
            self.i += 1
        else:
            self._digits()

    def _fraction(self) -> bool:
        """`.` and at least one digit; whether there was a fraction."""
        if self.peek() != ".":
            return False
        self.i += 1
        if not self._digits():
            raise self.fail("Miss fraction part in number.")
        return True

    def _exponent(self) -> bool:
        """`e`/`E`, an optional sign and at least one digit; whether there was an exponent."""
        if self.peek() not in "eE":
            return False
        self.i += 1
        if self.peek() in "+-":
            self.i += 1
        if not self._digits():
            raise self.fail("Miss exponent in number.")
        return True

    def _number_value(self, start: int, is_double: bool) -> JsonValue:
        """The token's value: integers that fit int64/uint64 stay integers; the rest are doubles,
        which must be finite."""
        text = self.s[start : self.i]
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
