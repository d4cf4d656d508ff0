"""Generated protobuf code (do not edit): see client/tools/gen_protos.py to regenerate."""
