"""Prometheus metrics for MCP servers, read from the JSON-RPC traffic on the wire."""

from mcp_metrics_middleware.metrics import MCPMetrics
from mcp_metrics_middleware.middleware import MCPMetricsMiddleware

__version__ = "0.2.0"
__all__ = ["MCPMetrics", "MCPMetricsMiddleware", "__version__"]
