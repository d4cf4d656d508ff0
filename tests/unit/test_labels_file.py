"""The ImageNet class index shipped with the export is Keras's own file, byte for byte: the
1000 (wnid, label) pairs in Keras's order, so labels match what Keras's decode_predictions says."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import xception_export

KERAS_CLASS_INDEX_MD5 = "c2c37ea517e94d9795004a39431a14cb"  # the file_hash Keras pins


def test_shipped_imagenet_class_index_is_keras_exact_copy() -> None:
    path = Path(xception_export.__file__).parent / "data" / "imagenet_class_index.json"
    assert hashlib.md5(path.read_bytes()).hexdigest() == KERAS_CLASS_INDEX_MD5
    index = json.loads(path.read_text())
    assert len(index) == 1000
    assert index["0"] == ["n01440764", "tench"]
