"""``mcp-metrics wrap -- COMMAND [ARGS...]``: MCP metrics for any stdio server, with no code.

A host (a desktop app, an IDE) launches this in place of the server command. The wrapper
spawns the server, joins the host's stdin and stdout to the server's, and serves ``/metrics``
of the traffic on a loopback port.

* **The pipe.** Bytes are forwarded as they arrive, in both directions, unchanged: a chunk is
  never held back waiting for the rest of its line. The
  :class:`~mcp_metrics_middleware.protocol.model.PipeConnection` reads each chunk just *before*
  it is forwarded (a few microseconds per line): the model must see a request before the other
  side can possibly answer it, and the two directions run in two threads, so reading after
  forwarding would let an answer overtake its request. stderr is the server's own (inherited).
  Writes block, so a slow reader holds back the writer (backpressure).
* **stdout is the protocol's.** Nothing but the server's bytes is ever written there: this
  module's messages go to stderr, and ``sys.stdout`` is pointed at stderr while it runs.
* **Signals** (INT, TERM, HUP, QUIT, USR1, USR2) are forwarded to the server. The exit status is
  the server's: its code, or, if a signal ended it, the same signal raised on the wrapper.
* **Metrics.** One session per process (from the ``initialize`` answer), every request in both
  directions, ``notifications/cancelled`` as ``cancelled``, requests pending when the server
  exits as ``no_response``, lines over the cap forwarded but counted as ``too_large``; all with
  ``network_transport="pipe"``. A metrics port that cannot be had is one line on stderr: the
  server still runs.

See: https://modelcontextprotocol.io/specification/2025-11-25/basic/transports#stdio
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from mcp_metrics_middleware.config import (
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_PARKED,
    DEFAULT_MAX_SESSIONS,
    DEFAULT_PARKED_TIMEOUT,
    DEFAULT_SESSION_IDLE_TIMEOUT,
)
from mcp_metrics_middleware.exposition import start_metrics_server
from mcp_metrics_middleware.logs import report_internal
from mcp_metrics_middleware.metrics import MCPMetrics
from mcp_metrics_middleware.protocol.model import PipeConnection, ServerModel

DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"
FORWARDED_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)
_CHUNK = 64 * 1024
_DRAIN_AFTER_EXIT = 5.0  # seconds to read what the server wrote before it exited


def _say(line: str) -> None:
    """One line on stderr (never stdout: it belongs to the protocol)."""
    try:
        sys.stderr.write(f"mcp-metrics wrap: {line}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # pragma: no cover - stderr closed by the host
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class Wrapper:
    """A server process joined to a host's stdin/stdout, observed by the exchange model.

    Args:
        command: the server command and its arguments.
        metrics: the recorder (``MCPMetrics``) the model reports to.
        stdin_fd / stdout_fd: the host's side of the pipe (default: this process's 0 and 1).
        max_line_size: bytes of one line that are decoded; longer lines pass, counted
            ``too_large``.

    Raises:
        OSError: from :meth:`start`, when the command cannot be run.
    """

    def __init__(
        self,
        command: Sequence[str],
        metrics: MCPMetrics,
        *,
        stdin_fd: int = 0,
        stdout_fd: int = 1,
        max_line_size: int = DEFAULT_MAX_BODY_SIZE,
    ) -> None:
        self.command = list(command)
        self.metrics = metrics
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.clock = time.perf_counter
        self.model = ServerModel(
            metrics,
            max_body_size=max_line_size,
            session_idle_timeout=DEFAULT_SESSION_IDLE_TIMEOUT,
            max_sessions=DEFAULT_MAX_SESSIONS,
            parked_timeout=DEFAULT_PARKED_TIMEOUT,
            max_parked=DEFAULT_MAX_PARKED,
        )
        self.lock = threading.Lock()  # the model is not thread-safe; the two pumps share it
        self.pipe: PipeConnection | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._out: threading.Thread | None = None

    def start(self) -> None:
        """Spawn the server and start both pumps."""
        self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.pipe = self.model.pipe(self.clock())
        assert self.process.stdin is not None and self.process.stdout is not None
        inbound = threading.Thread(
            target=self._pump_in, args=(self.process.stdin.fileno(),), name="mcp-wrap-stdin", daemon=True
        )
        self._out = threading.Thread(
            target=self._pump_out, args=(self.process.stdout.fileno(),), name="mcp-wrap-stdout", daemon=True
        )
        inbound.start()
        self._out.start()

    def _observe(self, client: bool, data: bytes) -> None:
        pipe = self.pipe
        assert pipe is not None
        try:
            with self.lock:
                if client:
                    pipe.client_bytes(self.clock(), data)
                else:
                    pipe.server_bytes(self.clock(), data)
        except Exception:  # never let the metrics hurt the pipe
            report_internal(self.metrics)

    def _pump_in(self, server_stdin: int) -> None:
        """Host -> server. The host closing its end closes the server's stdin (EOF)."""
        try:
            while True:
                data = os.read(self.stdin_fd, _CHUNK)
                if not data:
                    break
                self._observe(True, data)
                _write_all(server_stdin, data)
        except OSError:
            pass  # the server is gone (EPIPE) or the host's stdin broke: nothing more to carry
        finally:
            assert self.process is not None and self.process.stdin is not None
            with contextlib.suppress(OSError):
                self.process.stdin.close()

    def _pump_out(self, server_stdout: int) -> None:
        """Server -> host. If the host stops reading, the server's output is still drained."""
        host_open = True
        while True:
            try:
                data = os.read(server_stdout, _CHUNK)
            except OSError:  # pragma: no cover - the pipe's read end is ours alone
                break
            if not data:
                break
            self._observe(False, data)
            if host_open:
                try:
                    _write_all(self.stdout_fd, data)
                except OSError:
                    host_open = False

    def send_signal(self, signum: int) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    def wait(self) -> int:
        """Wait for the server to exit; end the connection (pending requests: ``no_response``).

        Returns the server's return code (negative: the signal that ended it).
        """
        assert self.process is not None and self._out is not None and self.pipe is not None
        code = self.process.wait()
        # Its last lines may still be in the pipe; a grandchild holding the pipe open is not
        # waited for past the bound.
        self._out.join(_DRAIN_AFTER_EXIT)
        with self.lock:
            try:
                self.pipe.end(self.clock())
            except Exception:
                report_internal(self.metrics)
        return code


# -- the command ---------------------------------------------------------------------------


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "wrap",
        help="run a stdio MCP server and record metrics of its traffic",
        description="Run COMMAND as a stdio MCP server, join this process's stdin and stdout to it "
        "unchanged, and serve Prometheus metrics of the traffic. Put it in front of the server "
        "command in a host's config: mcp-metrics wrap -- npx -y @modelcontextprotocol/server-everything",
    )
    parser.add_argument(
        "--metrics-listen",
        default=DEFAULT_METRICS_LISTEN,
        metavar="HOST:PORT",
        help=f"where /metrics is served (default {DEFAULT_METRICS_LISTEN}; port 0: any free port, "
        "written to stderr and --port-file)",
    )
    parser.add_argument("--port-file", metavar="PATH", help="write the metrics port to this file once it listens")
    parser.add_argument(
        "--metrics-token-file", metavar="PATH", help="require 'Authorization: Bearer <token in the file>' on /metrics"
    )
    parser.add_argument(
        "--max-line-size",
        type=int,
        default=DEFAULT_MAX_BODY_SIZE,
        metavar="BYTES",
        help=f"longest line decoded; longer ones pass through, counted too_large (default {DEFAULT_MAX_BODY_SIZE})",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]", help="the server to run")
    parser.set_defaults(run=run)
    return parser


def _serve_metrics(args: argparse.Namespace, registry: CollectorRegistry) -> Any:
    """Start the metrics endpoint, or say in one line why not (the server runs regardless)."""
    from mcp_metrics_middleware.proxy import UsageError, parse_address, read_token

    try:
        host, port = parse_address(args.metrics_listen, "--metrics-listen")
        token = read_token(args.metrics_token_file)
    except UsageError as exc:
        _say(f"{exc}; the server runs without a metrics endpoint")
        return None
    try:
        started = start_metrics_server(port, host, registry, token=token)
        if started is None:  # multiprocess mode: another process serves this port
            raise OSError(errno.EADDRINUSE, "Address already in use")
        server = started[0]
    except OSError as exc:
        _say(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; the server runs without them")
        return None
    chosen = server.server_port
    shown = f"[{host}]" if ":" in host else host
    _say(f"metrics on http://{shown}:{chosen}/metrics")
    if args.port_file:
        try:
            tmp = f"{args.port_file}.tmp{os.getpid()}"
            with open(tmp, "w", encoding="ascii") as f:
                f.write(f"{chosen}\n")
            os.replace(tmp, args.port_file)
        except OSError as exc:
            _say(f"cannot write --port-file {args.port_file}: {exc.strerror or exc}")
    return server


def _exit_like(code: int) -> int:
    """The server's status as ours: a signal that ended it ends us the same way."""
    if code >= 0:
        return code
    signum = -code
    with contextlib.suppress(OSError, ValueError):
        signal.signal(signum, signal.SIG_DFL)
        sys.stderr.flush()
        os.kill(os.getpid(), signum)
        time.sleep(1)  # pragma: no cover - the signal ends us before this returns
    return 128 + signum  # pragma: no cover - a signal whose default is not to end the process


def run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        _say("no server command: use mcp-metrics wrap [OPTIONS] -- COMMAND [ARGS...]")
        return 2
    if args.max_line_size < 1:
        _say("--max-line-size must be positive")
        return 2
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # a stray print() anywhere in this process must not corrupt the protocol
    try:
        registry = CollectorRegistry()
        wrapper = Wrapper(command, MCPMetrics(registry), max_line_size=args.max_line_size)
        previous = {signum: signal.signal(signum, lambda s, _f: wrapper.send_signal(s)) for signum in FORWARDED_SIGNALS}
        try:
            wrapper.start()
        except OSError as exc:
            _say(f"cannot run {command[0]!r}: {exc.strerror or exc}")
            return 127 if isinstance(exc, FileNotFoundError) else 126
        server = _serve_metrics(args, registry)
        code = wrapper.wait()
        if server is not None:
            server.shutdown()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        return _exit_like(code)
    finally:
        sys.stdout = real_stdout
