"""``python -m xception_export`` = ``xception-export``."""

import sys

from xception_export.cli import main

sys.exit(main())
