"""TF Serving's gRPC API (PredictionService, ModelService) over the runtime."""
