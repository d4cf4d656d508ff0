"""TF Serving's REST API (http_rest_api_handler.cc) over the runtime, on waitress."""
