"""GetModelStatus from the tracked versions, as TF Serving's ServableStateMonitor answers it."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from tensorflow_serving.apis import get_model_status_pb2

from xception_serving.runtime.errors import ServingError, code_number
from xception_serving.runtime.version_policy import TrackedVersion


def model_status(
    name: str, versions: Mapping[int, TrackedVersion], version: int | None
) -> get_model_status_pb2.GetModelStatusResponse:
    """Every version ever tracked (newest first), or the one asked for; NOT_FOUND as TF Serving."""
    if version is not None:
        if version not in versions:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}"
            )
        chosen = [versions[version]]
    else:
        if not versions:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}"
            )
        chosen = sorted(versions.values(), key=lambda v: v.version, reverse=True)
    response = get_model_status_pb2.GetModelStatusResponse()
    for tracked in chosen:
        status = response.model_version_status.add()
        status.version = tracked.version
        status.state = tracked.state
        status.status.SetInParent()  # TF Serving always sets it (OK, "")
        if tracked.error is not None:
            status.status.error_code = code_number(tracked.error.code)
            status.status.error_message = tracked.error.message
    return response
