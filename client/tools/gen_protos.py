"""Regenerate xception_client/_proto/*_pb2.py(i) from the .proto files beside them.

Run from the repository root after editing a .proto file, then commit the generated files:

    python -m venv /tmp/protoc && /tmp/protoc/bin/pip install "grpcio-tools==1.75.1"
    /tmp/protoc/bin/python client/tools/gen_protos.py

Why that grpcio-tools: generated code refuses to load under a protobuf runtime older than the protoc
that made it. grpcio-tools 1.75.1 bundles protoc 31.1 (Python gencode 6.31.1), which is the client's
`protobuf>=6.31.1` lower bound; a newer grpcio-tools would silently raise that floor.
tests/unit/test_client_wire.py checks both the header and that the committed code matches the .proto
files (it recompiles them with the dev group's grpcio-tools and compares descriptors).
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

SRC = Path(__file__).resolve().parents[1] / "src"
PROTO_DIR = SRC / "xception_client" / "_proto"


GRPCIO_TOOLS_VERSION = "1.75.1"


def main() -> int:
    from importlib.metadata import version

    if version("grpcio-tools") != GRPCIO_TOOLS_VERSION:
        print(
            f"gen_protos: need grpcio-tools=={GRPCIO_TOOLS_VERSION} (protoc 31.1), found "
            f"{version('grpcio-tools')}; see this script's docstring",
            file=sys.stderr,
        )
        return 2
    protos = sorted(p.relative_to(SRC).as_posix() for p in PROTO_DIR.glob("*.proto"))
    well_known = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{SRC}", f"-I{well_known}", f"--python_out={SRC}", f"--pyi_out={SRC}"]
    return protoc.main([*args, *protos])


if __name__ == "__main__":
    sys.exit(main())
