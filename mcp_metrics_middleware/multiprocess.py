"""Helpers for prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``).

Set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before the server starts; every worker
then writes its metrics there and the middleware's ``/metrics`` aggregates them all.

gunicorn: add to ``gunicorn.conf.py``::

    from mcp_metrics_middleware.multiprocess import child_exit  # noqa: F401
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any

_LIVE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def multiproc_dir() -> str | None:
    """The multiprocess directory prometheus-client uses, if multiprocess mode is on."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def mark_process_dead(pid: int, path: str | None = None) -> None:
    """Remove a dead worker's live-gauge files (its in-flight and session gauges)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn's ``child_exit`` hook: clean up after a worker that exited."""
    mark_process_dead(worker.pid)


def cleanup_dead_processes(path: str | None = None) -> list[int]:
    """Mark every worker whose live-gauge files remain but whose process is gone as dead.

    uvicorn ``--workers`` has no exit hook, so the middleware calls this before each multiprocess
    scrape: a crashed or restarted worker's in-flight and session gauges do not linger. It relies
    on the workers sharing this host's PID namespace, which a shared multiprocess directory
    implies.
    """
    path = path or multiproc_dir()
    if not path:
        return []
    pids = set()
    for name in glob.glob(os.path.join(path, "gauge_live*.db")):
        match = _LIVE_FILE.match(os.path.basename(name))
        if match:
            pids.add(int(match.group(1)))
    dead = sorted(pid for pid in pids if pid != os.getpid() and not _alive(pid))
    for pid in dead:
        mark_process_dead(pid, path)
    return dead
