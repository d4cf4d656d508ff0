"""Generated protobuf code (do not edit): regenerate with tools/generate-protos."""
