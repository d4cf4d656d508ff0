"""The file-system source: the versions under a model's base path, and the thread that polls them.

As TF Serving's FileSystemStoragePathSource (sources/storage_path/): a version is a child whose
name parses as an int64 (``layout.version_dirs``), polled every ``--file_system_poll_wait_seconds``;
a missing or empty base path is logged, not fatal.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from xception_contract import layout

log = logging.getLogger("xception_serving")


def _warn_duplicate(version: int, kept: Path, ignored: Path) -> None:
    log.warning(
        "Duplicate version directories detected. Version %d will be loaded from %s, %s "
        "will be ignored.",
        version,
        kept.name,
        ignored.name,
    )


def versions_on_disk(name: str, base_path: str) -> tuple[dict[int, Path], str | None]:
    """The version directories under `base_path`, and the problem to log if there are none."""
    if not base_path:
        return {}, None
    base = Path(base_path)
    try:
        on_disk = layout.version_dirs(base, _warn_duplicate)
    except OSError as err:
        return {}, (
            f"Could not find base path {base} for servable {name} with error {err.strerror or err}"
        )
    if not on_disk:
        return {}, (
            f"No versions of servable {name} found under base path {base}. Did you "
            "forget to name your leaf directory as a number (eg. '/1/')?"
        )
    return on_disk, None


class Poller:
    """Calls `poll` every `interval` seconds on a daemon thread until `stop` is set."""

    def __init__(self, poll: Callable[[], None], interval: float, stop: threading.Event) -> None:
        self._poll = poll
        self._interval = interval
        self._stop = stop
        self._thread = threading.Thread(target=self._loop, name="fs-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._poll()
            except Exception:  # the poller must survive anything a file system does
                log.exception("File system poll failed")
