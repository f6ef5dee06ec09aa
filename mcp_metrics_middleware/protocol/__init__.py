"""The sans-IO core: codecs and the MCP exchange model. No ASGI, asyncio or prometheus_client."""
