"""``make demo``: the evil-cat server, real traffic and the terminal view, in one command.

Starts ``python -m demo.server`` on 127.0.0.1:$DEMO_PORT (default 8000) and ``python -m
demo.traffic`` against it, both as child processes logging to files, then runs ``mcp-metrics
top`` in this terminal until Ctrl-C or for ``$DEMO_SECONDS`` seconds. On the way out it stops both
children (traffic first, so its sessions close cleanly), whatever ended the run.

Environment: ``DEMO_PORT``, ``DEMO_SECONDS`` (unset: until Ctrl-C), ``DEMO_CLIENTS`` (default 4),
``DEMO_INTERVAL`` (seconds between redraws, default 2).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import IO, Any

from mcp_metrics_middleware.cli import top

HOST = "127.0.0.1"


class DemoError(Exception):
    """A reason to stop the demo, printed as one line."""


def _say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    """Linux: the child gets SIGTERM if this process dies, even by SIGKILL (no orphans)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def spawn(args: list[str], log: IO[bytes], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # A session of its own: the terminal's Ctrl-C reaches only this process, which then stops
    # the children in order instead of all of them dying at once mid-request.
    return subprocess.Popen(
        [sys.executable, *args],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )


def wait_ready(url: str, server: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise DemoError(
                f"the server exited with status {server.returncode}:\n  " + "\n  ".join(tail)
            )
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise DemoError(f"the server did not answer {url} within {timeout:g}s (log: {log_path})")


def stop(process: subprocess.Popen[bytes] | None, grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; always reaps the child."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    return lines[-1] if lines else ""


def _raise_interrupt(signum: int, frame: FrameType | None) -> Any:
    raise KeyboardInterrupt


def main() -> int:
    port = int(os.environ.get("DEMO_PORT", "8000"))
    seconds_env = os.environ.get("DEMO_SECONDS", "").strip()
    seconds = float(seconds_env) if seconds_env else None
    clients = os.environ.get("DEMO_CLIENTS", "4")
    interval = float(os.environ.get("DEMO_INTERVAL", "2"))
    base = f"http://{HOST}:{port}"
    metrics_url, mcp_url = f"{base}/metrics", f"{base}/mcp"

    if not port_is_free(HOST, port):
        _say(f"port {port} on {HOST} is already in use; stop what is using it or set DEMO_PORT")
        return 1

    logs = Path(tempfile.mkdtemp(prefix="mcp-metrics-demo-"))
    server_log, traffic_log = logs / "server.log", logs / "traffic.log"
    env = {**os.environ, "DEMO_HOST": HOST, "DEMO_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    # Ctrl-C, and SIGTERM (from a supervisor or `timeout`), end the demo the same way, even when
    # a parent shell started us with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)

    server: subprocess.Popen[bytes] | None = None
    traffic: subprocess.Popen[bytes] | None = None
    status = 0
    try:
        with open(server_log, "wb") as server_out, open(traffic_log, "wb") as traffic_out:
            _say(f"starting the evil-cat MCP server on {mcp_url} (log: {server_log})")
            server = spawn(["-m", "demo.server"], server_out, env)
            wait_ready(metrics_url, server, server_log, timeout=30)
            _say(f"Prometheus metrics: {metrics_url}")
            _say(f"starting traffic: {clients} mcp clients, modern and legacy (log: {traffic_log})")
            traffic = spawn(
                ["-m", "demo.traffic", "--url", mcp_url, "--clients", clients, "--every", "5"],
                traffic_out,
                env,
            )
            bound = f"for {seconds:g}s" if seconds is not None else "until Ctrl-C"
            _say(f"terminal view: mcp-metrics top {metrics_url} ({bound})")
            print(flush=True)
            time.sleep(min(interval, 1.0))  # let the first calls land before the first frame
            top(
                metrics_url,
                interval=interval,
                duration=seconds,
                footer=f"metrics: {metrics_url}   logs: {logs}   Ctrl-C stops the demo",
            )
    except KeyboardInterrupt:
        print(flush=True)
    except DemoError as exc:
        _say(str(exc))
        status = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan a child
        stop(traffic, grace=8)
        stop(server, grace=5)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    summary = _last_line(traffic_log)
    if summary:
        print(summary, flush=True)
    _say("stopped the server and the traffic")
    return status


if __name__ == "__main__":
    sys.exit(main())
