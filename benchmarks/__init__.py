"""`make bench` (``python -m benchmarks.run``): the bundle measured against the machine's limit and
against the usual way of calling TF Serving.

The measurements that need TensorFlow or a server run in child processes started as
``python -m benchmarks.<module>`` from ``SOURCE_ROOT``, the directory that holds this package.
"""

from __future__ import annotations

from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent
