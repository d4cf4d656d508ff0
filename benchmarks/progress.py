"""Progress lines on stderr (stdout carries only the final table)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

Log = Callable[[str], None]


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
