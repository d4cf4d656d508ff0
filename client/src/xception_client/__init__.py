"""Thin gRPC client for an Xception classifier served by TensorFlow Serving."""
