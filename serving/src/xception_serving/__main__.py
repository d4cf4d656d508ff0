"""`python -m xception_serving`: the same as the `xception-serve` console script."""

from __future__ import annotations

import sys

from xception_serving.cli import main

if __name__ == "__main__":
    sys.exit(main())
