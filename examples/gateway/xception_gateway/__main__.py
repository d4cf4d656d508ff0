"""``python -m xception_gateway [--host H] [--port P]``: serve the gateway with uvicorn."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import uvicorn

from xception_gateway.app import create_app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xception-gateway", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default loopback)")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
