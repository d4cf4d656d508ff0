"""TF Serving's own config files: ``files`` reads them, ``_proto/`` holds the messages they use."""
