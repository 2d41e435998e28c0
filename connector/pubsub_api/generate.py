"""Regenerate the Pub/Sub API stubs from ``pubsub_api.proto`` (needs ``pip install grpcio-tools``).

Run from the repository root: ``python connector/pubsub_api/generate.py``. The generated modules
are committed so that installing leadscore needs only ``grpcio`` and ``protobuf``; the protobuf
floor in pyproject.toml must not be below the version the stubs were generated for (they check it
on import).
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    """Run protoc with the repository root as the include path (imports become package imports)."""
    proto = Path("connector/pubsub_api/pubsub_api.proto")
    return protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{ROOT}",
            f"--python_out={ROOT}",
            f"--grpc_python_out={ROOT}",
            f"--pyi_out={ROOT}",
            str(ROOT / proto),
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
