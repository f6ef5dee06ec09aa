"""The evil-cat demo: an MCP server, real traffic, and the terminal view."""
