"""Bulk classification on Apache Beam: every image a pattern or manifest names, in parallel.

``xception-bulk`` runs RunInference either in process (each worker loads the exported SavedModel
once and calls its ``serving_default`` signature, the graph TF Serving runs) or against a
running server through ``xception_client``. Results go to predictions-*.jsonl (or Parquet) and
errors-*.jsonl: every input lands in exactly one of them. Only the in-process handler imports
TensorFlow, and only on the worker that loads the model.
"""
