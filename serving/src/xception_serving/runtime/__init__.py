"""The model runtime: models and versions in TF1 Sessions, batching, and what Predict,
Classify, Regress and MultiInference do with them (TF Serving's core/, servables/tensorflow/ and
batching/). It knows nothing of gRPC servers or HTTP."""
