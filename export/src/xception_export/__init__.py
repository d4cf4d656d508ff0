"""Export Keras Xception as a TF Serving SavedModel that takes encoded image bytes."""
