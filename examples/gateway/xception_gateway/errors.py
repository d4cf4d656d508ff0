"""The gateway's own refusals: an HTTP status and a one-line message for {"error": ...}."""

from __future__ import annotations


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
