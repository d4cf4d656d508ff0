"""The export's exception tree; the CLI maps it to exit codes.

ExportError               runtime failure (exit 1): one line, traceback only with --verbose
├── UsageError            bad argument value (exit 2); the message echoes the value
└── VersionExistsError    the target version exists and --force was not given
"""

from __future__ import annotations


class ExportError(Exception):
    """The export could not be completed."""


class UsageError(ExportError):
    """An argument value is invalid; the message names the argument and echoes the value."""


class VersionExistsError(ExportError):
    """The requested version directory already exists (use --force to replace it)."""
