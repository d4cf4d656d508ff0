"""rapidjson as TF Serving uses it for REST bodies: the writer's numbers (`json_text`) and the
parser's documents, errors, offsets and nesting limit (`json_reader`).

Expected values come from TF Serving's own tests (json_tensor_test.cc) and rapidjson 1.1.0's
reader, not from this code's output.
"""

from __future__ import annotations

import math

import grpc
import numpy as np
import pytest
from xception_serving.api.rest import json_reader, json_text
from xception_serving.runtime.errors import ServingError


def error_of(fn: object, *args: object) -> ServingError:
    with pytest.raises(ServingError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value


# -- numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3.0, "3.0"),  # whole numbers get ".0"
        (3.5, "3.5"),
        (0.1, "0.1"),  # float32(0.1) round-trips at six digits: no noise digits
        (9000000.0, "9e+06"),  # %g exponent form, no ".0"
        (3e-05, "3e-05"),
        (float(np.float32(1 / 3)), "0.333333343"),  # six digits do not round-trip -> nine
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
    ],
)
def test_format_decimal_writes_floats_as_tf_serving(value: float, text: str) -> None:
    assert json_text.format_decimal(value) == text


# -- parsing ----------------------------------------------------------------------------------


def test_parse_json_rejects_empty_body_with_tf_serving_message() -> None:
    err = error_of(json_reader.parse_json, b"")
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.message == "JSON Parse error: The document is empty"


def test_parse_json_reports_rapidjson_error_and_offset_for_invalid_value() -> None:
    err = error_of(json_reader.parse_json, b"instances = [1, 2]")
    assert err.message == "JSON Parse error: Invalid value. at offset: 0"


def test_parse_json_reports_missing_member_name_at_its_offset() -> None:
    err = error_of(json_reader.parse_json, b'{"a": 1,}')
    assert err.message == "JSON Parse error: Missing a name for object member. at offset: 8"


def test_parse_json_rejects_a_top_level_array_as_not_object() -> None:
    err = error_of(json_reader.parse_json, b"[1]")
    assert err.message == "JSON Value: [\n    1\n] Is not object"


def test_parse_json_accepts_nan_and_infinity_tokens() -> None:
    doc = json_reader.parse_json(b'{"v": [NaN, Infinity, -Infinity, -Inf]}')
    values = doc["v"]
    assert math.isnan(values[0])
    assert values[1:] == [math.inf, -math.inf, -math.inf]


def test_parse_json_refuses_nesting_past_the_limit_at_the_offending_bracket() -> None:
    # The root object is level 1, so the 512th '[' (offset 13 + 511) opens level 513.
    body = b'{"instances":' + b"[" * 2000 + b"1.0" + b"]" * 2000 + b"}"
    err = error_of(json_reader.parse_json, body)
    assert (err.code, err.message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "JSON Parse error: Nesting of arrays and objects is deeper than the limit of 512 "
        "levels. at offset: 524",
    )


def test_parse_json_accepts_nesting_at_the_limit_and_counts_no_brackets_inside_strings() -> None:
    deepest = b'{"a": "]]]]\\\\", "b":' + b"[" * 511 + b"]" * 511 + b"}"
    assert len(json_reader.parse_json(deepest)) == 2
    escaped_quote = b'{"a": "\\"' + b"]" * 600 + b'", "b":' + b"[" * 512 + b"]" * 512 + b"}"
    assert "deeper than the limit of 512" in error_of(json_reader.parse_json, escaped_quote).message


def test_parse_json_nesting_limit_is_a_parameter() -> None:
    assert json_reader.parse_json(b'{"a": [[1]]}', max_depth=3) == {"a": [[1]]}
    err = error_of(lambda b: json_reader.parse_json(b, max_depth=2), b'{"a": [[1]]}')
    assert err.message == (
        "JSON Parse error: Nesting of arrays and objects is deeper than the limit of 2 levels. "
        "at offset: 7"
    )


def test_parse_json_syntax_error_before_the_deep_part_is_rapidjsons() -> None:
    err = error_of(json_reader.parse_json, b'{"a": x, "b":' + b"[" * 1000 + b"}")
    assert err.message == "JSON Parse error: Invalid value. at offset: 6"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # rapidjson 1.1.0 reports escape errors at the escape's backslash.
        (b'{"s": "\\ud800"}', "The surrogate pair in string is invalid. at offset: 7"),
        (b'{"s": "\\ud800\\u0041"}', "The surrogate pair in string is invalid. at offset: 7"),
        (b'{"s": "\\u12"}', "Incorrect hex digit after \\u escape in string. at offset: 7"),
        (b'{"s": "\\q"}', "Invalid escape character in string. at offset: 7"),
        # ParseNull/True/False fail just past the letters that matched.
        (b'{"a": nulx}', "Invalid value. at offset: 9"),
        (b'{"a": tru}', "Invalid value. at offset: 9"),
        # An integer past the double range, however long.
        (b'{"a": ' + b"9" * 5000 + b"}", "Number too big to be stored in double. at offset: 6"),
        (b'{"a": -' + b"9" * 400 + b"}", "Number too big to be stored in double. at offset: 6"),
    ],
)
def test_parse_json_reports_rapidjson_1_1_errors_at_their_offsets(
    body: bytes, message: str
) -> None:
    assert error_of(json_reader.parse_json, body).message == f"JSON Parse error: {message}"


def test_parse_json_keeps_a_lone_low_surrogate_as_rapidjsons_bytes() -> None:
    doc = json_reader.parse_json(b'{"s": "x\\udc00", "p": "\\ud83d\\ude00"}')
    assert json_text.to_bytes(doc["s"]) == b"x\xed\xb0\x80"  # U+DC00 written as UTF-8
    assert doc["p"] == "\U0001f600"  # a proper pair is one character


def test_parse_json_reads_the_root_value_only_as_tf_serving_stops_when_done() -> None:
    assert json_reader.parse_json(b'{"a": 1} trailing [') == {"a": 1}
    assert json_reader.parse_json(b'{"a": 1}\x00{') == {"a": 1}


def test_a_value_quoted_in_a_message_stops_at_the_first_token_past_256_bytes() -> None:
    # TF Serving 2.18+ JsonValueToDebugString: each write happens only while the text is under
    # 256 bytes, so the 300-byte string is written whole and nothing after it.
    doc = json_reader.parse_json(b'{"instances": 1, "s": "' + b"a" * 300 + b'", "t": [2]}')
    err = error_of(lambda d: json_text.list_member(d, "instances", "not a list", "empty"), doc)
    quoted = '{\n    "instances": 1,\n    "s": "' + "a" * 300 + '"'
    assert err.message == f"JSON Value: {quoted} not a list"


def test_a_huge_body_quoted_in_a_message_stays_small() -> None:
    doc = json_reader.parse_json(b'{"instances": 1, "x": [' + b"1.5, " * 500_000 + b"2]}")
    err = error_of(lambda d: json_text.list_member(d, "instances", "not a list", "empty"), doc)
    assert len(err.message) < 300


def test_nesting_scan_follows_strings_and_escapes() -> None:
    assert not json_reader.nests_deeper_than(b'["' + b"[" * 600 + b'"]', 512)
    assert json_reader.nests_deeper_than(b"[" * 600, 512)
    assert not json_reader.nests_deeper_than(b'{"a": "\\\\", "b":' + b"[" * 511 + b"}", 512)
    assert json_reader.nests_deeper_than(b'{"a": "\\\\", "b":' + b"[" * 512 + b"}", 512)
