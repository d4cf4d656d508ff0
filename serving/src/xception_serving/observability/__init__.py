"""What the server tells operators: TF Serving's Prometheus metrics and OpenTelemetry spans."""
