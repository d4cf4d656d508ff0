"""The API front ends over the runtime: gRPC (``api.grpc``) and REST (``api.rest``), each
independent of the other."""
