"""`xception-export` and ``python -m xception_export``: the export's command."""

from __future__ import annotations

import sys

from xception_contract import extras


def main() -> int:
    # Before importing the export, which needs TensorFlow and Keras: name the extra instead.
    extras.require("xception-export", "export", ["tensorflow", "keras", "tensorflow_serving"])
    from xception_export.cli import main as export

    return export()


if __name__ == "__main__":
    sys.exit(main())
