"""A local server that answers as TensorFlow Serving does, and TF Serving launch tooling."""
