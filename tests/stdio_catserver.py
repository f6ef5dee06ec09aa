"""The cat server (tests/catserver.py) over stdio, plus tools that misbehave on purpose.

Run: python tests/stdio_catserver.py. Used by the wrap tests as a Python SDK server.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.catserver import build_server


def main() -> None:
    mcp = build_server()

    @mcp.tool()
    def hairball(text: str) -> str:
        """Cough a line of garbage onto stdout (a server logging to the wrong stream), then answer."""
        os.write(1, b"hairball: this is not JSON\n")
        return f"coughed {text}"

    @mcp.tool()
    def long_meow(n: int) -> str:
        """A long answer (for the line cap)."""
        return "meow" * n

    @mcp.tool()
    def vanish(code: int) -> str:
        """Exit at once, leaving this call unanswered."""
        os._exit(code)

    mcp.run("stdio")


if __name__ == "__main__":
    main()
