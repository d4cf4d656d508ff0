"""`xception-serve` and `python -m xception_serving`: the local server's command."""

from __future__ import annotations

import sys

from xception_contract import extras


def main() -> int:
    # Before importing the server, which needs TensorFlow: name the extra instead of failing there.
    extras.require("xception-serve", "serve", ["tensorflow", "tensorflow_serving", "waitress"])
    from xception_serving.cli import main as serve

    return serve()


if __name__ == "__main__":
    sys.exit(main())
