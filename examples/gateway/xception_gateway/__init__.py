"""HTTP gateway in front of TF Serving (or xception-serve): FastAPI on xception_client's
AsyncClient. See examples/gateway/README.md."""

from xception_gateway.app import Settings, create_app

__all__ = ["Settings", "create_app"]
