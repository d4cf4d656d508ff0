"""The model contract: what export, serving and client agree on, with no dependencies.

This top level holds the signatures, tensor aliases and defaults: the export writes these names
into the SavedModel, the client reads them to build requests, the launcher uses the ports. Two
submodules hold the rest the parts share:

- ``layout``: what a base path and a version directory hold, with TF Serving's rule for which
  children are versions (``version_dirs``);
- ``tf_startup``: how a console script imports TensorFlow without its C++ start-up lines.

It is its own package, standard library only, so that the client stays free of TensorFlow, the
server process never imports the client, and ``serving/run-tfserving.sh`` runs with a bare python3.
"""

from __future__ import annotations

from typing import Final

DEFAULT_MODEL_NAME: Final = "xception"
DEFAULT_GRPC_PORT: Final = 8500
DEFAULT_REST_PORT: Final = 8501

# Signatures (SignatureDef keys) and their TF Serving method names.
BYTES_SIGNATURE: Final = "serving_default"  # encoded image bytes -> labelled top-k
PIXELS_SIGNATURE: Final = "serving_pixels"  # uint8 [N, H, W, 3] at the model's size
PREPROCESSED_SIGNATURE: Final = "serving_preprocessed"  # float32 [N, H, W, 3] model input
CLASSIFY_SIGNATURE: Final = "classify"  # tf.Example with image/encoded -> classes/scores
PREDICT_METHOD: Final = "tensorflow/serving/predict"
CLASSIFY_METHOD: Final = "tensorflow/serving/classify"

# Inputs.
IMAGE_BYTES_INPUT: Final = "image_bytes"  # DT_STRING [-1]
PIXELS_INPUT: Final = "pixels"  # DT_UINT8 [-1, H, W, 3]
PREPROCESSED_INPUT: Final = "preprocessed"  # DT_FLOAT [-1, H, W, 3]
CLASSIFY_INPUT: Final = "inputs"  # DT_STRING [-1] serialized tf.Example
EXAMPLE_IMAGE_FEATURE: Final = "image/encoded"

# Predict outputs (all signatures but classify).
PROBABILITIES_OUTPUT: Final = "probabilities"  # DT_FLOAT [-1, C]
TOP_K_SCORES_OUTPUT: Final = "top_k_scores"  # DT_FLOAT [-1, K]
TOP_K_CLASS_IDS_OUTPUT: Final = "top_k_class_ids"  # DT_INT32 [-1, K]
TOP_K_LABELS_OUTPUT: Final = "top_k_labels"  # DT_STRING [-1, K]
TOP_K_KEYS_OUTPUT: Final = "top_k_keys"  # DT_STRING [-1, K], only when labels have keys (wnids)

# Classify outputs.
CLASSIFY_CLASSES_OUTPUT: Final = "classes"  # DT_STRING [-1, C]
CLASSIFY_SCORES_OUTPUT: Final = "scores"  # DT_FLOAT [-1, C]

# Limits and defaults.
DEFAULT_TOP_K: Final = 5
DEFAULT_MAX_PIXELS: Final = 40_000_000
# Decode work that does not follow the pixel count, refused before the decode: progressive JPEG
# scans (libjpeg's progressions write 6-18 per image), GIF blocks before the first image and
# PNG compressed text chunks (zTXt, iTXt: libpng inflates each, up to 8 MB).
DEFAULT_MAX_JPEG_SCANS: Final = 32
DEFAULT_MAX_GIF_BLOCKS: Final = 1024
DEFAULT_MAX_PNG_TEXT_CHUNKS: Final = 8
DEFAULT_IMAGE_SIZE: Final = 299
# Formats the exported graph decodes; anything else is re-encoded losslessly by the client.
GRAPH_DECODABLE_FORMATS: Final = frozenset({"JPEG", "PNG", "GIF", "BMP"})
