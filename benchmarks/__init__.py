"""Benchmarks: the middleware's overhead against the bare app, a no-op wrapper and the peers.

Entry point: ``python -m benchmarks.run [--quick]`` (``make bench``).
"""
