"""The one table ``make bench`` prints, and the machine description."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "mcp",
    "starlette",
    "uvicorn",
    "prometheus-client",
    "orjson",
    "starlette-exporter",
    "prometheus-fastapi-instrumentator",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> float | None:
    """The 1-minute load average: other work on the machine skews every figure."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def machine() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "mcp_metrics_middleware", ":!*/cli.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        commit, dirty = "", ""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": versions,
        "commit": commit + ("+dirty" if dirty else ""),
        "loadavg_1m": loadavg(),
    }


def _num(value: float, unit: str) -> str:
    if unit == "req/s":
        return f"{value:,.0f}"
    if unit.startswith("ms"):
        return f"{value:,.2f}"
    if unit == "MB/s":
        return f"{value:,.0f}" if value < 1e5 else "n/a"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def _cells(row: dict[str, Any]) -> list[str]:
    unit = row["unit"]
    case = row["case"] + (f" [{row['detail']}]" if row.get("detail") else "")
    median = f"{_num(row['median'], unit)} {unit}"
    spread = f"{_num(row['min'], unit)}–{_num(row['max'], unit)}"
    overhead = ratio = extra = ""
    section = row["section"]
    if section == "in-process" and row.get("overhead") is not None:
        overhead = f"{row['overhead']:+.1f} µs"
        ratio = f"{row['ratio']:.3f}"
        if "share_of_instrumentator" in row:

            def share(key: str) -> str:
                value = row.get(key)
                return "n/a" if value is None else f"{value:.2f}"

            extra = (
                f"{share('share_of_instrumentator')} x instrumentator's added cost "
                f"({share('share_of_starlette_exporter')} x starlette-exporter's)"
            )
    elif section == "network":
        if row.get("ratio") is not None:
            ratio = f"{row['ratio']:.3f}"
        extra = f"p50 {row['p50_ms']:.1f} / p90 {row['p90_ms']:.1f} / p99 {row['p99_ms']:.1f} ms"
        if row.get("errors"):
            extra += f", {row['errors']} errors"
    elif section == "sse-decoding":
        extra = f"{row['chunks']} chunks, {row['bytes'] / 1e6:.1f} MB"
    elif section == "proxy":
        extra = f"p99 {row['p99_ms']:.2f} ms ({row['p99_min']:.2f}–{row['p99_max']:.2f})"
        if "added_p50_ms" in row:
            overhead = f"{row['added_p50_ms']:+.2f} ms"
            extra += f", adds p50 {row['added_p50_ms']:+.2f} / p99 {row['added_p99_ms']:+.2f} ms"
    elif section == "scrape":
        extra = f"p99 {row['p99_ms']:.2f} ms ({row['p99_min']:.2f}–{row['p99_max']:.2f})"
        if row.get("ratio") is not None:
            ratio = f"{row['ratio']:.2f}"
            extra += f", p99 x{row['p99_ratio']:.2f}, {row['scrapes_per_s']:.1f} scrapes/s"
    elif section == "streams":
        overhead = f"{row['overhead']:+.2f} ms"
        ratio = f"{row['ratio']:.2f}"
        extra = f"peak +{row['extra_peak_bytes'] / 1024:,.0f} KiB"
    target = ""
    if row.get("target"):
        target = row["target"] + (" ok" if row.get("met") else " MISSED")
    if row.get("note"):
        extra = (extra + "; " if extra else "") + row["note"]
    return [section, case, row["variant"], median, spread, overhead, ratio, extra, target]


HEADERS = [
    "section",
    "case",
    "variant",
    "median",
    "min–max",
    "vs bare (+)",
    "ratio",
    "notes",
    "target (ours)",
]


def table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    body = [_cells(r) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(c[i]) for c in body)) for i, h in enumerate(HEADERS)]
    out = ["  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    previous = None
    for cells in body:
        key = cells[0] if cells[0] != "in-process" else (cells[0], cells[1])
        if previous is not None and key != previous:
            out.append("")
        previous = key
        out.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    return "\n".join(out)


def markdown(results: dict[str, Any]) -> str:
    """The README block for a results file: the machine line, then the table."""
    meta = results["meta"]
    line = (
        f"Measured {meta['date']} ({meta['mode']} run, commit {meta['commit']}): "
        f"{meta['nproc']} x {meta['cpu']}, Python {meta['python']}, "
        f"load generator {meta.get('load_generator') or '-'}, "
        f"1-minute load average {meta.get('loadavg_1m_before')} -> {meta.get('loadavg_1m')}."
    )
    return line + "\n\n" + table(results["rows"], markdown=True)


if __name__ == "__main__":
    import json
    import sys

    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "benchmarks/results/latest.json"
    print(markdown(json.loads(path.read_text())))
