"""The one error type the core raises: a gRPC status code plus TF Serving's message wording."""

from __future__ import annotations

import re

import grpc

# TF Serving truncates gRPC error messages (grpc_status_util.cc); REST carries the full text.
GRPC_MESSAGE_LIMIT = 1024
TRUNCATED_SUFFIX = "...TRUNCATED"


class ServingError(Exception):
    """A request failed as TF Serving would fail it."""

    code: grpc.StatusCode
    message: str

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def invalid(message: str) -> ServingError:
    """TF Serving's errors::InvalidArgument, the code of most request errors."""
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def grpc_message(message: str) -> str:
    """The message as TF Serving puts it on the wire: at most 1024 chars, then `...TRUNCATED`."""
    if len(message) <= GRPC_MESSAGE_LIMIT:
        return message
    return message[:GRPC_MESSAGE_LIMIT] + TRUNCATED_SUFFIX


_OP_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\]\s*$")
# Eager's wrapper: the header, then "Detected at node <n> defined at (most recent call last):" and
# the Python traceback of where the node was defined: indented "File ..." / source lines, or
# "<stack traces unavailable>" when the function was loaded from a SavedModel. The kernel's own
# text starts at the first line after that which is neither.
_EAGER_PREFIX = re.compile(
    r"^Graph execution error:\s*"
    r"(?:Detected at node [^\n]*\n(?:(?:<stack traces unavailable>|[ \t][^\n]*|)\n)*)*"
)


def runtime_message(message: str) -> str:
    """TF's eager error text reduced to what a Session (TF Serving) reports.

    Eager adds "Graph execution error:", a Python traceback of where the node was defined and an
    "[Op:__inference_...]" suffix; TF Serving's message is the kernel's own status text.
    """
    stripped = _EAGER_PREFIX.sub("", message, count=1)
    return _OP_SUFFIX.sub("", stripped or message)


# tensorflow.error.Code values equal grpc.StatusCode's integer values.
def code_number(code: grpc.StatusCode) -> int:
    return int(code.value[0])


def code_from_number(number: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


def from_exception(err: BaseException) -> ServingError:
    """Map any failure to a ServingError: TF runtime errors keep their code and text."""
    if isinstance(err, ServingError):
        return err
    error_code = getattr(err, "error_code", None)  # tf.errors.OpError carries TF's code
    if isinstance(error_code, int):
        message = getattr(err, "message", None) or str(err)
        return ServingError(code_from_number(error_code), runtime_message(str(message)))
    if isinstance(err, (TypeError, ValueError)):
        return ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(err))
    return ServingError(grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}")
