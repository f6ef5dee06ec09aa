"""The README's quickstart, run exactly as written."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client

from tests.conftest import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent


def quickstart_source(name: str = "quickstart") -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(rf"<!-- {name}: begin -->\n```python\n(.*?)```\n<!-- {name}: end -->", readme, re.S)
    assert block, f"{name} block missing from README.md"
    return block.group(1)


@contextlib.contextmanager
def readme_server(tmp_path: Path, block: str) -> Iterator[str]:
    """Run a README code block as ``server.py`` on a free port; yields its base URL."""
    port = free_port()
    (tmp_path / "server.py").write_text(quickstart_source(block).replace("port=8000", f"port={port}"))
    proc = subprocess.Popen(
        [sys.executable, "server.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/metrics", timeout=1)
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def tool_call_line(version: str) -> str:
    return (
        'mcp_server_operation_duration_seconds_count{error_type="",'
        'gen_ai_prompt_name="",gen_ai_tool_name="sharpen_claw",'
        f'mcp_method_name="tools/call",mcp_protocol_version="{version}",'
        'network_transport="tcp",rpc_response_status_code=""} 1.0'
    )


def test_quickstart_runs_as_written(tmp_path: Path) -> None:
    with readme_server(tmp_path, "quickstart") as url:

        async def call() -> None:
            async with Client(url + "/mcp") as client:
                await client.call_tool("sharpen_claw", {"level": 3})

        anyio.run(call)
        expected = tool_call_line("2026-07-28")
        # Recorded just after the last byte went to the client: poll for it.
        wait_for(lambda: expected in httpx.get(url + "/metrics").text)
        assert expected in (ROOT / "README.md").read_text()


def test_license_and_project_urls() -> None:
    """The metadata says MIT: the LICENSE file says so too, and the project links are set."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in license_text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert set(project["urls"]) == {"Homepage", "Source", "Issues", "Changelog"}
    assert all(url.startswith("https://") for url in project["urls"].values())


def test_readme_starts_where_users_start() -> None:
    """Quickstart right after the introduction; no bare PyPI install shown as if it worked."""
    readme = (ROOT / "README.md").read_text()
    sections = re.findall(r"^## (.+)$", readme, re.M)
    assert sections[0] == "Quickstart"
    assert "Troubleshooting" in sections
    for m in re.finditer(r"pip install mcp-metrics-middleware\b", readme):
        context = readme[max(0, m.start() - 200) : m.end() + 200]
        assert "not yet published on PyPI" in context, context


def test_fastmcp_wiring_runs_as_written(tmp_path: Path) -> None:
    pytest.importorskip("fastmcp")
    with readme_server(tmp_path, "fastmcp") as url:
        for mode in ("auto", "legacy"):

            async def call(mode: str = mode) -> None:
                async with Client(url + "/mcp", mode=mode) as client:  # type: ignore[arg-type]
                    assert not (await client.call_tool("sharpen_claw", {"level": 3})).is_error

            anyio.run(call)
        for version in ("2026-07-28", "2025-11-25"):
            expected = tool_call_line(version)
            wait_for(lambda expected=expected: expected in httpx.get(url + "/metrics").text)  # type: ignore[misc]
