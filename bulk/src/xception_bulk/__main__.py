"""``python -m xception_bulk``: the xception-bulk command."""

import sys

from .cli import main

sys.exit(main())
