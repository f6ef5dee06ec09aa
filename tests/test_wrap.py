"""``mcp-metrics wrap``: real stdio servers (the TypeScript reference server, a Python SDK server),
driven by the real SDK client or by raw lines, with exact counts and byte-for-byte checks."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError
from prometheus_client import CollectorRegistry

from mcp_metrics_middleware.metrics import MCPMetrics
from mcp_metrics_middleware.wrap import Wrapper
from tests.thirdparty import (
    MCP_METRICS,
    PYTHON,
    ROOT,
    STDIO_CATSERVER,
    everything,
    needs_everything,
    op_counts,
    process,
    sample,
    scrape,
    wait_until,
)

pytestmark = pytest.mark.anyio
LEGACY = "2025-11-25"


def wrap_params(tmp_path: Path, server: list[str], *options: str) -> StdioServerParameters:
    """The host's config: ``mcp-metrics wrap --metrics-listen 127.0.0.1:0 --port-file F -- server``."""
    args = [*MCP_METRICS[1:], "wrap", "--metrics-listen", "127.0.0.1:0", "--port-file", str(tmp_path / "port")]
    return StdioServerParameters(command=PYTHON, args=[*args, *options, "--", *server], cwd=str(ROOT))


def metrics_url(tmp_path: Path) -> str:
    wait_until(lambda: (tmp_path / "port").exists(), what="port file")
    return f"http://127.0.0.1:{(tmp_path / 'port').read_text().strip()}/metrics"


# -- the real SDK client over stdio ------------------------------------------------------------


@needs_everything
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_everything_server_exact_counts(tmp_path: Path, mode: str) -> None:
    """The TypeScript reference server: tools by name, isError as tool_error, one pipe session."""
    async with Client(wrap_params(tmp_path, everything("stdio")), mode=mode) as client:  # type: ignore[arg-type]
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"echo", "get-sum"} <= tools
        assert (await client.call_tool("echo", {"message": "miaow"})).content[0].text == "Echo: miaow"  # type: ignore[union-attr]
        await client.call_tool("get-sum", {"a": 1, "b": 2})
        await client.call_tool("get-sum", {"a": 3, "b": 4})
        assert (await client.call_tool("get-sum", {"a": "x", "b": 2})).is_error
        assert (await client.call_tool("no-such-tool", {})).is_error
        samples = scrape(metrics_url(tmp_path))
    expected = {
        ("initialize", "", "", "", LEGACY): 1,
        ("notifications/initialized", "", "", "", LEGACY): 1,
        ("tools/list", "", "", "", LEGACY): 1,
        ("tools/call", "echo", "", "", LEGACY): 1,
        ("tools/call", "get-sum", "", "", LEGACY): 2,
        ("tools/call", "get-sum", "tool_error", "", LEGACY): 1,
        ("tools/call", "_OTHER", "tool_error", "", LEGACY): 1,  # an unknown name is never a label
    }
    if mode == "auto":
        # The 2026 client asks server/discover first; this server (TS SDK 1.x) refuses it (-32601, the
        # caller's mistake: not an error), and the client falls back to initialize. The refused
        # request is labelled with the version its _meta named; everything after, the negotiated one.
        expected[("server/discover", "", "", "-32601", "2026-07-28")] = 1
    assert op_counts(samples, "pipe") == expected
    assert op_counts(samples, "tcp") == {}
    assert sample(samples, "mcp_server_sessions_active") == 1
    assert sample(samples, "mcp_metrics_parse_errors_total", reason="invalid_json") == 0


@pytest.mark.parametrize(("mode", "version", "sessions"), [("legacy", LEGACY, 1), ("auto", "2026-07-28", 1)])
async def test_python_server_exact_counts(tmp_path: Path, mode: str, version: str, sessions: int) -> None:
    """A Python SDK server; garbage on its stdout is forwarded and counted, not fatal."""
    # A launcher that prints to stdout before the server starts (the Python SDK itself keeps
    # stray writes off the protocol stream: the hairball tool's line lands on stderr).
    noisy = ["sh", "-c", f"echo 'starting catbox (not JSON)'; exec {' '.join(STDIO_CATSERVER)}"]
    async with Client(wrap_params(tmp_path, noisy), mode=mode) as client:  # type: ignore[arg-type]
        await client.list_tools()
        await client.call_tool("sharpen_claw", {"level": 3})
        await client.call_tool("sharpen_claw", {"level": 4})
        assert (await client.call_tool("scratch_sofa", {"claw_level": 1})).is_error
        with pytest.raises(MCPError):
            await client.call_tool("scratch_sofa", {"claw_level": 42})
        assert (await client.call_tool("hairball", {"text": "fur"})).content[0].text == "coughed fur"  # type: ignore[union-attr]
        samples = scrape(metrics_url(tmp_path))
    expected = {
        ("tools/list", "", "", "", version): 1,
        ("tools/call", "sharpen_claw", "", "", version): 2,
        ("tools/call", "scratch_sofa", "tool_error", "", version): 1,
        ("tools/call", "scratch_sofa", "-32050", "-32050", version): 1,
        ("tools/call", "hairball", "", "", version): 1,
    }
    if mode == "legacy":
        expected[("initialize", "", "", "", version)] = 1
        expected[("notifications/initialized", "", "", "", version)] = 1
    else:
        # 2026-07-28 over stdio: no initialize; the version comes from _meta, and the
        # process's one session starts with the first request.
        expected[("server/discover", "", "", "", version)] = 1
    assert op_counts(samples, "pipe") == expected
    assert sample(samples, "mcp_server_sessions_active") == sessions
    assert sample(samples, "mcp_metrics_parse_errors_total", reason="invalid_json") == 1  # the launcher's line


# -- raw lines through an in-process Wrapper ----------------------------------------------------


class Host:
    """The host's side of an in-process Wrapper: writes lines, reads what comes back."""

    def __init__(self, command: list[str], **options: Any) -> None:
        self.registry = CollectorRegistry()
        in_r, self.in_w = os.pipe()
        self.out_r, out_w = os.pipe()
        self.wrapper = Wrapper(command, MCPMetrics(self.registry), stdin_fd=in_r, stdout_fd=out_w, **options)
        self.wrapper.start()
        self.sent = bytearray()
        self.received = bytearray()
        self._lock = threading.Lock()
        self._fds = (in_r, out_w)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while data := os.read(self.out_r, 65536):
            with self._lock:
                self.received += data

    def send(self, message: dict[str, Any] | bytes) -> None:
        line = message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n"
        self.sent += line
        os.write(self.in_w, line)

    def answer(self, request_id: int) -> dict[str, Any]:
        """Wait for the answer with this id among the lines received so far."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            with self._lock:
                lines = bytes(self.received).split(b"\n")
            for line in lines:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if isinstance(msg, dict) and msg.get("id") == request_id and "method" not in msg:
                    found.append(msg)
                    return True
            return False

        wait_until(seen, what=f"answer {request_id}")
        return found[0]

    def close(self) -> int:
        os.close(self.in_w)
        code = self.wrapper.wait()
        os.close(self._fds[0])
        os.close(self._fds[1])
        self._reader.join(10)
        os.close(self.out_r)
        return code

    def count(self, method: str, tool: str = "", error_type: str = "", version: str = LEGACY) -> float | None:
        return self.registry.get_sample_value(
            "mcp_server_operation_duration_seconds_count",
            {
                "mcp_method_name": method,
                "gen_ai_tool_name": tool,
                "gen_ai_prompt_name": "",
                "error_type": error_type,
                "rpc_response_status_code": "",
                "mcp_protocol_version": version,
                "network_transport": "pipe",
            },
        )


def _initialize(host: Host) -> None:
    host.send(
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "raw-host", "version": "1"}},
        }
    )
    host.answer(0)
    host.send({"jsonrpc": "2.0", "method": "notifications/initialized"})


def _call(request_id: int, tool: str, **arguments: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}


def test_bytes_identical_garbage_cap_cancel_and_pending_at_exit(tmp_path: Path) -> None:
    """The server's stdin and stdout (recorded by tee inside the wrapped command) are exactly the
    host's bytes; garbage and an over-long line pass and are counted; a cancelled call is
    ``cancelled``; the call pending when the server exits is ``no_response``."""
    server = " ".join(STDIO_CATSERVER)
    # The launcher's line is garbage on the server's stdout.
    script = f"tee {tmp_path / 'in'} | {{ echo 'npx: not JSON'; {server}; }} | tee {tmp_path / 'out'}"
    host = Host(["sh", "-c", script], max_line_size=10_000)
    _initialize(host)
    host.send({"jsonrpc": "2.0", "id": 10, "method": "tools/list"})  # tool names become labels
    host.answer(10)
    host.send(_call(1, "sharpen_claw", level=5))
    host.answer(1)
    host.send(b"this line is not JSON\n")  # the host's garbage: forwarded, counted, answered by the server
    host.send(_call(2, "hairball", text="x"))  # the SDK sends its stray line to stderr
    host.answer(2)
    host.send(_call(3, "long_meow", n=5000))  # a 20,000-byte answer: past the 10,000-byte cap
    assert host.answer(3)["result"]["content"][0]["text"] == "meow" * 5000
    host.send(_call(4, "nap", seconds=30))
    host.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 4, "reason": "bored"}})
    host.send(_call(5, "scratch_sofa", claw_level=1))
    assert host.answer(5)["result"]["isError"] is True
    host.send(_call(6, "vanish", code=3))  # the server exits with this call pending
    assert host.close() == 0  # sh's status: the last tee's
    assert bytes(host.sent) == (tmp_path / "in").read_bytes()
    assert bytes(host.received) == (tmp_path / "out").read_bytes()
    assert host.received.startswith(b"npx: not JSON\n")

    assert host.count("initialize") == 1
    assert host.count("tools/call", "sharpen_claw") == 1
    assert host.count("tools/call", "hairball") == 1
    assert host.count("tools/call", "nap", "cancelled") == 1
    assert host.count("notifications/cancelled") == 1
    assert host.count("tools/call", "scratch_sofa", "tool_error") == 1
    assert host.count("tools/call", "vanish", "no_response") == 1
    # The answer over the cap was not parsed: its call waited until the end like the vanished one.
    assert host.count("tools/call", "long_meow", "no_response") == 1
    errors = {
        reason: host.registry.get_sample_value("mcp_metrics_parse_errors_total", {"reason": reason})
        for reason in ("invalid_json", "too_large", "truncated")
    }
    assert errors == {"invalid_json": 2, "too_large": 1, "truncated": 0}
    assert host.registry.get_sample_value("mcp_server_sessions_active") == 0
    assert host.registry.get_sample_value("mcp_server_session_duration_seconds_count", {"mcp_protocol_version": LEGACY}) == 1


# -- the command as a host runs it --------------------------------------------------------------

INIT_LINE = (
    json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "raw-host", "version": "1"}},
        }
    ).encode()
    + b"\n"
)


def _read_line(stream: Any) -> bytes:
    line: bytes = stream.readline()
    assert line, "the wrapped server closed its stdout"
    return line


def test_exit_status_and_stdout_holds_only_the_server_bytes(tmp_path: Path) -> None:
    """A server that exits with 3 mid-call: wrap exits 3, stdout carries only JSON-RPC lines."""
    with process(
        [*MCP_METRICS, "wrap", "--metrics-listen", "127.0.0.1:0", "--", *STDIO_CATSERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(INIT_LINE)
        proc.stdin.flush()
        assert json.loads(_read_line(proc.stdout))["id"] == 0
        proc.stdin.write(json.dumps(_call(1, "vanish", code=3)).encode() + b"\n")
        proc.stdin.flush()
        assert proc.wait(20) == 3
        rest = proc.stdout.read()
        stderr = proc.stderr.read().decode()
    assert rest == b""  # nothing after the server's last line: no message of ours on stdout
    assert re.search(r"^mcp-metrics wrap: metrics on http://127\.0\.0\.1:\d+/metrics$", stderr, re.M)
    assert "Traceback" not in stderr


def test_signal_forwarded_and_exit_status_preserved() -> None:
    """SIGTERM reaches the server; its exit code (42 from its handler) is wrap's."""
    server = [
        PYTHON,
        "-c",
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
        "print('ready', file=sys.stderr, flush=True)\n"
        "for _ in range(600): time.sleep(0.05)\n",
    ]
    with process(
        [*MCP_METRICS, "wrap", "--metrics-listen", "127.0.0.1:0", "--", *server],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stderr is not None
        lines = [proc.stderr.readline(), proc.stderr.readline()]
        assert b"ready\n" in lines  # the server's stderr passes through
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 42


def test_server_killed_by_signal_kills_wrap_with_it() -> None:
    with process(
        [*MCP_METRICS, "wrap", "--metrics-listen", "127.0.0.1:0", "--", *STDIO_CATSERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(INIT_LINE)
        proc.stdin.flush()
        _read_line(proc.stdout)  # the server is up, and its default SIGTERM action is to die
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == -signal.SIGTERM


def test_port_taken_one_line_and_the_server_still_runs() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with process(
            [*MCP_METRICS, "wrap", "--metrics-listen", f"127.0.0.1:{port}", "--", *STDIO_CATSERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as proc:
            assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
            proc.stdin.write(INIT_LINE)
            proc.stdin.flush()
            assert json.loads(_read_line(proc.stdout))["result"]["serverInfo"]["name"] == "catbox"
            proc.stdin.close()  # the host leaves: the server sees EOF and exits
            assert proc.wait(20) == 0
            stderr = proc.stderr.read().decode()
    ours = [line for line in stderr.splitlines() if line.startswith("mcp-metrics wrap:")]
    assert ours == [
        f"mcp-metrics wrap: cannot serve metrics on 127.0.0.1:{port}: Address already in use; "
        "the server runs without them"
    ]
    assert "Traceback" not in stderr


def test_port_zero_reported_on_stderr_and_in_port_file(tmp_path: Path) -> None:
    with process(
        [
            *MCP_METRICS,
            "wrap",
            "--metrics-listen",
            "127.0.0.1:0",
            "--port-file",
            str(tmp_path / "port"),
            "--",
            *STDIO_CATSERVER,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        line = proc.stderr.readline().decode()
        match = re.fullmatch(r"mcp-metrics wrap: metrics on http://127\.0\.0\.1:(\d+)/metrics\n", line)
        assert match is not None, line
        wait_until(lambda: (tmp_path / "port").exists(), what="port file")
        assert (tmp_path / "port").read_text() == f"{match[1]}\n"
        proc.stdin.write(INIT_LINE)
        proc.stdin.flush()
        _read_line(proc.stdout)
        samples = scrape(f"http://127.0.0.1:{match[1]}/metrics")
        assert sample(samples, "mcp_server_sessions_active") == 1
        proc.stdin.close()
        assert proc.wait(20) == 0


@pytest.mark.parametrize(
    ("argv", "status", "line"),
    [
        # no command at all
        (["wrap"], 2, "mcp-metrics wrap: no server command: use mcp-metrics wrap [OPTIONS] -- COMMAND [ARGS...]"),
        # a command that does not exist
        (["wrap", "--", "no-such-mcp-server-xyz"], 127, "mcp-metrics wrap: cannot run 'no-such-mcp-server-xyz': No such file or directory"),
    ],
)
def test_errors_are_one_line(argv: list[str], status: int, line: str) -> None:
    result = subprocess.run([*MCP_METRICS, *argv], cwd=ROOT, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == status
    assert result.stdout == b""
    assert result.stderr.decode().splitlines() == [line]


def test_metrics_token_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    with process(
        [
            *MCP_METRICS,
            "wrap",
            "--metrics-listen",
            "127.0.0.1:0",
            "--port-file",
            str(tmp_path / "port"),
            "--metrics-token-file",
            str(tmp_path / "token"),
            "--",
            *STDIO_CATSERVER,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as proc:
        assert proc.stdin is not None
        url = metrics_url(tmp_path)
        import urllib.error

        with pytest.raises(urllib.error.HTTPError) as refused:
            scrape(url)
        assert refused.value.code == 401
        assert sample(scrape(url, token="s3cret"), "mcp_server_sessions_active") == 0
        proc.stdin.close()
        assert proc.wait(20) == 0



# -- the README's desktop-host config, as written ----------------------------------------------


def readme_block(name: str, lang: str) -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(rf"<!-- {name}: begin -->\n```{lang}\n(.*?)```\n<!-- {name}: end -->", readme, re.S)
    assert block, f"{name} block missing from README.md"
    return block.group(1)


@needs_everything
async def test_readme_desktop_config_runs(tmp_path: Path) -> None:
    """The config snippet, with two substitutions: the console script is run by this Python, and the
    `npx -y` download is the pinned copy in tests/node_modules (same package, no network)."""
    config = json.loads(readme_block("wrap-config", "json"))["mcpServers"]["everything"]
    assert config["command"] == "mcp-metrics"
    args = config["args"]
    cut = args.index("--")
    assert args[cut + 1 :] == ["npx", "-y", "@modelcontextprotocol/server-everything"]
    options = [("127.0.0.1:0" if a == "127.0.0.1:9464" else a) for a in args[:cut]]  # the test's own port
    params = StdioServerParameters(
        command=PYTHON,
        args=[*MCP_METRICS[1:], *options, "--port-file", str(tmp_path / "port"), "--", *everything("stdio")],
        cwd=str(ROOT),
    )
    async with Client(params, mode="legacy") as client:
        await client.call_tool("echo", {"message": "from the README"})
        samples = scrape(metrics_url(tmp_path))
    assert op_counts(samples, "pipe")[("tools/call", "echo", "", "", LEGACY)] == 1
