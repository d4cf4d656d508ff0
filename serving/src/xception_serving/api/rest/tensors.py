"""JSON tensors: TF Serving's predict request and response bodies (`util/json_tensor.cc`).

`fill_predict_inputs` turns `instances` (row) or `inputs` (columnar) into TensorProtos typed by the
signature's input dtypes, each element checked by `_scalars` with TF Serving's error texts;
`predict_response_json` writes the outputs back as `{"predictions": ...}` / `{"outputs": ...}`.
The seam is the TensorProto: what a dtype's typed field is and how a proto decodes (TF's fill
rules, `tensor_content`) belongs to `tensors.py`, which the gRPC path uses too, and the JSON text
itself to `json_text`. What is left here is json_tensor.cc's own logic: JSON shape and value
rules in, rapidjson tokens per dtype out.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from xception_serving.api.rest._scalars import (
    DOUBLE_MAX_INT,
    FLOAT32_MAX,
    FLOAT_MAX_INT,
    Element,
    decode_base64_object,
    dtype_name,
    is_base64_object,
    scalar,
    type_error,
)
from xception_serving.api.rest.json_text import (
    JsonValue,
    PrettyWriter,
    format_decimal,
    json_value_to_string,
    list_member,
    quote_bytes,
)
from xception_serving.runtime import tensors
from xception_serving.runtime.errors import ServingError, invalid

Format = Literal["row", "columnar"]


# ---------------------------------------------------------------------------------------------
# Predict request: JSON -> PredictRequest.inputs


def _fast_leaf(items: list[JsonValue], dtype: int) -> Sequence[Element] | None:
    """The common all-plain-numbers leaf list, converted without per-element calls; None when
    any element needs the careful path (which then reports the exact error)."""
    if dtype == types_pb2.DT_FLOAT:
        if all(type(v) is float for v in items):
            if all(-FLOAT32_MAX <= v <= FLOAT32_MAX for v in items):
                return items
            return None
        if all(type(v) is int for v in items) and all(
            -FLOAT_MAX_INT <= v <= FLOAT_MAX_INT for v in items
        ):
            return [float(v) for v in items]
        return None
    ints = (types_pb2.DT_INT32, types_pb2.DT_UINT8, types_pb2.DT_INT16, types_pb2.DT_INT8)
    if (
        dtype in ints
        and all(type(v) is int for v in items)
        and all(-(2**31) <= v < 2**31 for v in items)
    ):
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


def _fast_dense(val: JsonValue, shape: list[int], dtype: int) -> Sequence[Element] | None:
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
    limit = FLOAT_MAX_INT if dtype == types_pb2.DT_FLOAT else DOUBLE_MAX_INT
    if array.dtype.kind == "i":
        if np.abs(array).max() > limit:
            return None
        return array.astype(np.float64).ravel().tolist()
    finite = array[np.isfinite(array)]
    if dtype == types_pb2.DT_FLOAT and finite.size and np.abs(finite).max() > FLOAT32_MAX:
        return None
    # Integer tokens mixed with decimals became floats: whole values beyond the lossless limit
    # might have been integer tokens, which TF Serving rejects; let the walk decide.
    big = np.abs(finite) > limit
    if big.any() and (finite[big] == np.round(finite[big])).any():
        return None
    return array.ravel().tolist()


def _fill_dense(
    val: JsonValue, shape: list[int], dtype: int, out: list[Element], fast: bool
) -> None:
    values = _fast_dense(val, shape, dtype) if fast else None
    if values is None:
        _fill(val, 0, shape, dtype, out)
    else:
        out.extend(values)


def _fill(val: JsonValue, level: int, shape: list[int], dtype: int, out: list[Element]) -> None:
    """FillTensorProto: walk the nested lists, checking each level's size against `shape`."""
    rank = len(shape)
    if not isinstance(val, list):
        if level != rank:
            raise invalid(
                f"JSON Value: {json_value_to_string(val)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {rank}"
            )
        if isinstance(val, dict):
            if dtype != types_pb2.DT_STRING:
                raise type_error(val, dtype)
            out.append(decode_base64_object(val))
        else:
            out.append(scalar(val, dtype))
        return
    if level >= rank:
        raise invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(val) != shape[level]:
        raise invalid(
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


def _shape_text(shape: list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _status_text(err: ServingError) -> str:
    return f"{err.code.name}: {err.message}"  # absl::Status::ToString()


@dataclass
class _Instance:
    size: int
    shape: list[int]
    values: list[Element]


def _add_instance_item(
    item: JsonValue,
    name: str,
    dtypes: Mapping[str, int],
    seen: dict[str, _Instance],
    fast: bool,
) -> None:
    """AddInstanceItem: one instance's value for input `name`; all instances must agree."""
    if name not in dtypes:
        raise invalid(f"JSON object: does not have named input: {name}")
    shape = _dense_shape(item)
    values: list[Element] = []
    _fill_dense(item, shape, dtypes[name], values, fast)
    previous = seen.get(name)
    if previous is None:
        seen[name] = _Instance(len(values), shape, values)
        return
    if previous.size != len(values):
        raise invalid(f"Expecting tensor size: {previous.size} but got: {len(values)}")
    if previous.shape != shape:
        raise invalid(
            f"Expecting shape {_shape_text(previous.shape)} but got: {_shape_text(shape)}"
        )
    previous.values.extend(values)


def _is_element_object(val: JsonValue) -> bool:
    """An instance given as named inputs (an object that is not a {"b64": ...} value)."""
    return isinstance(val, dict) and not is_base64_object(val)


def _add_object_instance(
    index: int,
    element: JsonValue,
    input_names: list[str],
    dtypes: Mapping[str, int],
    seen: dict[str, _Instance],
    fast: bool,
) -> None:
    """One instance of the named-inputs form: every input once, by name."""
    if not _is_element_object(element):
        raise invalid(f"Expecting object but got list at item {index} of input list")
    for name, item in element.items():
        try:
            _add_instance_item(item, name, dtypes, seen, fast)
        except ServingError as err:
            raise invalid(
                f"Failed to process element: {index} key: {name} of 'instances' list. "
                f"Error: {_status_text(err)}"
            ) from None
    if sorted(element) != input_names:
        raise invalid(
            f"Failed to process element: {index} of 'instances' list. JSON object: "
            f"{json_value_to_string(element)} must only have keys: " + ",".join(input_names)
        )


def _add_plain_instance(
    index: int,
    element: JsonValue,
    input_names: list[str],
    dtypes: Mapping[str, int],
    seen: dict[str, _Instance],
    fast: bool,
) -> None:
    """One instance of the single-input form: the value itself."""
    if _is_element_object(element):
        raise invalid(f"Expecting value/list but got object at item {index} of input list")
    try:
        _add_instance_item(element, input_names[0], dtypes, seen, fast)
    except ServingError as err:
        raise invalid(
            f"Failed to process element: {index} of 'instances' list. Error: {_status_text(err)}"
        ) from None


def _fill_from_instances(
    instances: list[JsonValue], dtypes: Mapping[str, int], fast: bool
) -> dict[str, tensor_pb2.TensorProto]:
    if not isinstance(instances[0], dict) and len(dtypes) > 1:
        raise invalid(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    # The first instance decides the form; every other one must follow it.
    add = _add_object_instance if _is_element_object(instances[0]) else _add_plain_instance
    input_names = sorted(dtypes)
    seen: dict[str, _Instance] = {}
    for index, element in enumerate(instances):
        add(index, element, input_names, dtypes, seen, fast)
    result: dict[str, tensor_pb2.TensorProto] = {}
    for name, instance in seen.items():
        tensor = tensor_pb2.TensorProto()
        tensors.fill_values(
            tensor, dtypes[name], [len(instances), *instance.shape], instance.values
        )
        result[name] = tensor
    return result


def _columnar_tensor(val: JsonValue, dtype: int, fast: bool) -> tensor_pb2.TensorProto:
    shape = _dense_shape(val)
    values: list[Element] = []
    _fill_dense(val, shape, dtype, values, fast)
    tensor = tensor_pb2.TensorProto()
    tensors.fill_values(tensor, dtype, shape, values)
    return tensor


def _fill_from_inputs(
    inputs: JsonValue, dtypes: Mapping[str, int], fast: bool
) -> dict[str, tensor_pb2.TensorProto]:
    names = sorted(dtypes)
    if not isinstance(inputs, dict) or is_base64_object(inputs):
        if len(names) > 1:
            raise invalid(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        return {names[0]: _columnar_tensor(inputs, dtypes[names[0]], fast)}
    result = {}
    for name in names:
        if name not in inputs:
            raise invalid(f"Missing named input: {name} in 'inputs' object.")
        result[name] = _columnar_tensor(inputs[name], dtypes[name], fast)
    return result


def signature_name_of(doc: Mapping[str, JsonValue]) -> str:
    """FillSignature: the optional `signature_name` member ("" when absent)."""
    if "signature_name" not in doc:
        return ""
    name = doc["signature_name"]
    if not isinstance(name, str):
        raise invalid(
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
        raise invalid(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise invalid(
            f"JSON Value: {json_value_to_string(doc)} Not formatted correctly expecting only "
            "one of 'inputs' or 'instances' keys to exist "
        )
    if has_instances:
        instances = list_member(
            doc,
            "instances",
            "Excepting 'instances' to be an list/array",
            "No values in 'instances' array",
        )
        return _fill_from_instances(instances, dtypes, fast), "row"
    if has_inputs:
        return _fill_from_inputs(doc["inputs"], dtypes, fast), "columnar"
    raise invalid("Missing 'inputs' or 'instances' key")


def input_dtypes_of(signature: meta_graph_pb2.SignatureDef) -> dict[str, int]:
    return {alias: info.dtype for alias, info in signature.inputs.items()}


# ---------------------------------------------------------------------------------------------
# Predict response: PredictResponse.outputs -> JSON

_INTEGERS = frozenset(
    {
        types_pb2.DT_INT32,
        types_pb2.DT_INT16,
        types_pb2.DT_INT8,
        types_pb2.DT_UINT8,
        types_pb2.DT_INT64,
        types_pb2.DT_UINT32,
        types_pb2.DT_UINT64,
    }
)
# What MakeJsonFromTensors accepts before writing: the tokens below, plus uint16, which gets
# past this check and fails on its first value.
_WRITABLE = _INTEGERS | {
    types_pb2.DT_FLOAT,
    types_pb2.DT_DOUBLE,
    types_pb2.DT_BOOL,
    types_pb2.DT_STRING,
    types_pb2.DT_UINT16,
}


def _tokens(values: list[Any], dtype: int, as_b64: bool) -> list[bytes]:
    """AddSingleValueAndAdvance for a run of values."""
    if dtype == types_pb2.DT_FLOAT:
        return [format_decimal(v).encode() for v in values]
    if dtype == types_pb2.DT_DOUBLE:
        return [format_decimal(v, double=True).encode() for v in values]
    if dtype in _INTEGERS:
        return [str(int(v)).encode() for v in values]
    if dtype == types_pb2.DT_BOOL:
        return [b"true" if v else b"false" for v in values]
    if dtype == types_pb2.DT_STRING:
        if as_b64:
            return [b'{"b64": ' + quote_bytes(base64.b64encode(v)) + b"}" for v in values]
        return [quote_bytes(v) for v in values]
    raise invalid(f"Failed to write JSON value for tensor type: {dtype_name(dtype)}")


class _TensorWriter:
    """AddTensorValues over one tensor, advancing through its flat values."""

    def __init__(self, name: str, tensor: tensor_pb2.TensorProto) -> None:
        self.dtype: int = tensor.dtype
        self.shape: list[int] = [d.size for d in tensor.tensor_shape.dim]
        # Typed fields or tensor_content, with TF's fill rules for short typed fields.
        # One Python type per dtype (what numpy's tolist() gives), so Any rather than Element.
        self.values: list[Any] = tensors.to_numpy(tensor).ravel().tolist()
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


def _check_writable(outputs: Mapping[str, tensor_pb2.TensorProto], names: list[str]) -> None:
    """Fail on unsupported dtypes up front, as TF Serving does on the first value it writes."""
    for name in names:
        if outputs[name].dtype not in _WRITABLE:
            raise invalid(
                f"Failed to write JSON value for tensor type: {dtype_name(outputs[name].dtype)}"
            )


def _batch_size(writers: Mapping[str, _TensorWriter]) -> int:
    """The row format's common first dimension, checked tensor by tensor in name order."""
    batch_size = 0
    for name, tensor in writers.items():
        shape = tensor.shape
        if not shape:
            raise invalid(f"Tensor name: {name} has no shape information ")
        if shape[0] < 1:
            raise invalid(f"Tensor name: {name} has invalid batch size: {shape[0]}")
        if batch_size and batch_size != shape[0]:
            raise invalid(
                f"Tensor name: {name} has inconsistent batch size: {shape[0]} "
                f"expecting: {batch_size}"
            )
        batch_size = shape[0]
    return batch_size


def _write_tensors(
    writer: PrettyWriter, writers: Mapping[str, _TensorWriter], dim: int, single_line: bool
) -> None:
    """One value of each tensor from dimension `dim` on: keyed by name in an object when there
    are several, bare when there is one. `single_line` lays their arrays out on one line (the
    enclosing object keeps the usual layout)."""
    objects = len(writers) > 1
    if objects:
        writer.start_object()
    writer.single_line_arrays = single_line
    for name, tensor in writers.items():
        if objects:
            writer.key(name)
        tensor.write(writer, dim)
    writer.single_line_arrays = False
    if objects:
        writer.end_object()


def _write_rows(writer: PrettyWriter, writers: Mapping[str, _TensorWriter]) -> None:
    batch_size = _batch_size(writers)
    writer.key("predictions")
    writer.start_array()
    for _ in range(batch_size):
        _write_tensors(writer, writers, 1, single_line=True)
    writer.end_array()


def predict_response_json(outputs: Mapping[str, tensor_pb2.TensorProto], fmt: Format) -> bytes:
    """MakeJsonFromTensors: `{"predictions": ...}` for row requests, `{"outputs": ...}` for
    columnar ones."""
    if not outputs:
        raise invalid("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    _check_writable(outputs, names)
    writers = {name: _TensorWriter(name, outputs[name]) for name in names}
    writer = PrettyWriter()
    writer.start_object()
    if fmt == "row":
        _write_rows(writer, writers)
    else:
        writer.key("outputs")
        _write_tensors(writer, writers, 0, single_line=False)
    writer.end_object()
    return writer.getvalue()
