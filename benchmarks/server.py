"""One network-benchmark server: the cat MCPServer under one variant, uvicorn, one worker.

``python -m benchmarks.server --variant ours --port 8101``
"""

from __future__ import annotations

import argparse

import uvicorn

from benchmarks import catserver, variants


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=variants.VARIANTS, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app, _mcp = catserver.build_app()
    uvicorn.run(
        variants.wrap(args.variant, app),
        host="127.0.0.1",
        port=args.port,
        workers=1,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
