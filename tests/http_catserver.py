"""The cat server (tests/catserver.py) over Streamable HTTP in its own process, for tests that kill it.

Run: python tests/http_catserver.py PORT [--stateless]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import uvicorn

from tests.catserver import build_server

if __name__ == "__main__":
    app = build_server().streamable_http_app(stateless_http="--stateless" in sys.argv)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
