"""Status and metadata JSON: GET /v1/models/<name>[/metadata] bodies (`http_rest_api_util.cc`).

Unlike the predict/classify/regress bodies, TF Serving writes these with protobuf's JSON printer
(`MessageToJsonString`, whitespace on, fields in number order), not rapidjson, so they live apart
from `json_text`: `status_json` prints the GetModelStatusResponse, `metadata_json` splices the
model_spec and the unpacked SignatureDefMap as TF Serving does, and `signature_defs_of` gives the
predict path its signature's input dtypes from the same response.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from xception_serving.runtime.errors import ServingError


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
                value = {
                    k: (_ordered(value_type, v) if value_type else v)
                    for k, v in sorted(value.items())
                }
            elif field.is_repeated:
                value = [_ordered(message, v) for v in value]
            else:
                value = _ordered(message, value)
        result[name] = value
    return result


def _proto_json(message: Message, *, preserve_names: bool) -> str:
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
    text = f'{{\n"model_spec":{model_spec},\n"metadata": {{"signature_def": {signatures}}}\n}}\n'
    return text.encode()


def signature_defs_of(
    response: get_model_metadata_pb2.GetModelMetadataResponse,
) -> Mapping[str, meta_graph_pb2.SignatureDef]:
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_defs)
    result: Mapping[str, meta_graph_pb2.SignatureDef] = signature_defs.signature_def
    return result
