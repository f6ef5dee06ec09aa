"""Traffic for the evil-cat server, from the real ``mcp`` client.

    python -m demo.traffic --url http://127.0.0.1:8000/mcp --duration 30 --clients 4

Even-numbered clients use the client's default mode (``server/discover``, then the 2026-07-28
protocol, no sessions); odd-numbered ones use ``mode="legacy"``: an ``initialize`` handshake and
a session that lives for a handful of calls, then closes (DELETE) and opens again. Each client
sends a weighted mix of tool calls with plausible arguments, list calls, ``prompts/get``,
``resources/read`` and, now and then, a tool name that does not exist, as a model would
hallucinate. ``--duration 0`` runs until Ctrl-C. A progress line goes to stdout every few
seconds; Ctrl-C or SIGTERM stops the clients and prints a summary, without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from mcp import Client, MCPError

TARGETS = ("the dog", "the vacuum cleaner", "a cucumber", "the mail carrier", "the new kitten")
PROMPT_TARGETS = ("sofa", "curtains", "houseplant", "keyboard", "toilet paper roll")
HALLUCINATED_TOOLS = ("summon_dog", "open_fridge", "sharpen_claws", "knock_off_table", "meow")


@dataclasses.dataclass
class Stats:
    calls: int = 0
    tool_errors: int = 0  # results with isError: true (sofa too hard, hairball, unknown tool)
    protocol_errors: int = 0  # JSON-RPC errors (MCPError on the client side)
    failures: int = 0  # transport trouble: server down, connection reset, timeouts
    connects: int = 0  # legacy: one session each
    by_op: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.tool_errors + self.protocol_errors + self.failures

    def line(self, elapsed: float) -> str:
        rate = self.calls / elapsed if elapsed > 0 else 0.0
        return (
            f"traffic: {elapsed:5.1f}s  calls={self.calls} ({rate:.1f}/s)  "
            f"errors={self.errors} (isError={self.tool_errors}, json-rpc={self.protocol_errors}, "
            f"transport={self.failures})  connects={self.connects}"
        )


Op = Callable[[Client, random.Random], Awaitable[Any]]


async def _sharpen(client: Client, rng: random.Random) -> Any:
    return await client.call_tool("sharpen_claw", {"level": rng.randint(1, 10000)})


async def _scratch(client: Client, rng: random.Random) -> Any:
    # Cats usually scratch right after sharpening: claws mostly sharp, sometimes dull.
    level = int(min(10000, max(1, rng.gauss(6000, 2500))))
    return await client.call_tool("scratch_sofa", {"claw_level": level})


async def _nap(client: Client, rng: random.Random) -> Any:
    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        return None

    seconds = round(min(3.0, rng.expovariate(1 / 0.4)), 2)
    return await client.call_tool("nap", {"seconds": seconds}, progress_callback=on_progress)


async def _hiss(client: Client, rng: random.Random) -> Any:
    args = {"at": rng.choice(TARGETS), "volume": rng.randint(0, 6)}
    return await client.call_tool("hiss", args)


async def _cough(client: Client, rng: random.Random) -> Any:
    return await client.call_tool("cough_hairball", {"fur": rng.randint(0, 40)})


async def _hallucinate(client: Client, rng: random.Random) -> Any:
    return await client.call_tool(rng.choice(HALLUCINATED_TOOLS), {"level": 9})


async def _list_tools(client: Client, rng: random.Random) -> Any:
    return await client.list_tools()


async def _list_prompts(client: Client, rng: random.Random) -> Any:
    return await client.list_prompts()


async def _list_resources(client: Client, rng: random.Random) -> Any:
    return await client.list_resources()


async def _get_prompt(client: Client, rng: random.Random) -> Any:
    return await client.get_prompt("evil_plan", {"target": rng.choice(PROMPT_TARGETS)})


async def _read_resource(client: Client, rng: random.Random) -> Any:
    return await client.read_resource("cat://profile")


# (name, weight, operation)
MIX: tuple[tuple[str, int, Op], ...] = (
    ("sharpen_claw", 24, _sharpen),
    ("scratch_sofa", 24, _scratch),
    ("nap", 8, _nap),
    ("hiss", 10, _hiss),
    ("cough_hairball", 8, _cough),
    ("hallucinated", 3, _hallucinate),
    ("tools/list", 6, _list_tools),
    ("prompts/list", 3, _list_prompts),
    ("resources/list", 3, _list_resources),
    ("prompts/get", 5, _get_prompt),
    ("resources/read", 6, _read_resource),
)
_NAMES = [name for name, _, _ in MIX]
_WEIGHTS = [weight for _, weight, _ in MIX]
_OPS = {name: op for name, _, op in MIX}


class Clock:
    """When to stop: at the deadline, or as soon as someone calls :meth:`stop`."""

    def __init__(self, duration: float) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + duration if duration > 0 else None

    def running(self) -> bool:
        return self.deadline is None or time.monotonic() < self.deadline

    def stop(self) -> None:
        self.deadline = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started


async def run_client(index: int, url: str, stats: Stats, rng: random.Random, clock: Clock) -> None:
    """One simulated client, reconnecting after each session or failure, until the clock stops.

    It stops between calls, so legacy sessions end with their DELETE and the server's
    active-session gauge goes back down.
    """
    mode = "legacy" if index % 2 else "auto"
    warned = False
    while clock.running():
        # Legacy sessions are short (open, a few calls, DELETE); modern clients have no
        # session, so they reconnect rarely.
        budget = rng.randint(5, 25) if mode == "legacy" else rng.randint(50, 200)
        try:
            # cache=None: the 2026-07-28 client would otherwise answer repeated list, prompt and
            # resource reads from its own cache, and the server would never see them.
            async with Client(url, mode=mode, read_timeout_seconds=30, cache=None) as client:
                stats.connects += 1
                warned = False
                # As a model host does: learn the tools before calling any. (The middleware
                # labels a tool name only once the server has vouched for it, so calls made
                # before any tools/list on a fresh server would show up as "_OTHER".)
                stats.calls += 1
                stats.by_op["tools/list"] = stats.by_op.get("tools/list", 0) + 1
                await client.list_tools()
                for _ in range(budget):
                    if not clock.running():
                        break
                    name = rng.choices(_NAMES, _WEIGHTS)[0]
                    stats.calls += 1
                    stats.by_op[name] = stats.by_op.get(name, 0) + 1
                    try:
                        result = await _OPS[name](client, rng)
                    except MCPError:
                        stats.protocol_errors += 1
                    else:
                        if getattr(result, "is_error", False):
                            stats.tool_errors += 1
                    await anyio.sleep(rng.uniform(0.01, 0.15))
        except Exception as exc:  # the server went away, a reset, a timeout: keep trying
            stats.failures += 1
            if not warned:
                print(f"traffic: client {index} ({mode}): {_describe(exc)}; retrying", flush=True)
                warned = True
            await anyio.sleep(0.5)


def _describe(exc: BaseException) -> str:
    inner = getattr(exc, "exceptions", None)  # an exception group: report its first member
    while inner:
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:160]


async def run(
    url: str, duration: float, clients: int, seed: int | None, every: float, grace: float = 5.0
) -> Stats:
    stats = Stats()
    clock = Clock(duration)
    master = random.Random(seed)

    async def report() -> None:
        while True:
            await anyio.sleep(every)
            print(stats.line(clock.elapsed()), flush=True)

    async def on_signal(workers: anyio.CancelScope) -> None:
        # First Ctrl-C/SIGTERM: finish the calls in progress and close the sessions.
        # Second one, or `grace` seconds later: cancel whatever is left.
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if clock.running():
                    clock.stop()
                    workers.deadline = anyio.current_time() + grace
                else:
                    workers.cancel()

    async with anyio.create_task_group() as outer:
        outer.start_soon(report)
        async with anyio.create_task_group() as workers:
            outer.start_soon(on_signal, workers.cancel_scope)
            for index in range(clients):
                rng = random.Random(master.getrandbits(64))
                workers.start_soon(run_client, index, url, stats, rng, clock)
        outer.cancel_scope.cancel()  # every client has stopped
    print(stats.line(clock.elapsed()) + "  (done)", flush=True)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo.traffic", description="Real MCP client traffic for the evil-cat demo."
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000/mcp", help="MCP endpoint")
    parser.add_argument(
        "--duration", type=float, default=0.0, help="seconds to run (0: until Ctrl-C)"
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable runs")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between progress lines")
    args = parser.parse_args(argv)
    if args.clients < 1:
        parser.error("--clients must be at least 1")
    print(
        f"traffic: {args.clients} clients -> {args.url} "
        f"({'until Ctrl-C' if args.duration <= 0 else f'for {args.duration:g}s'})",
        flush=True,
    )
    try:
        anyio.run(run, args.url, args.duration, args.clients, args.seed, args.every)
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        print("traffic: interrupted", flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
