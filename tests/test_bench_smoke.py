"""The benchmark script runs end to end and produces every row (no timing assertions)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--quiet", "--output", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    result["stdout"] = proc.stdout
    return result


def test_every_row_is_produced(smoke: dict) -> None:
    from benchmarks import cases, sse_decode, streams, variants

    keys = {(r["section"], r["case"], r["variant"]) for r in smoke["rows"]}
    expected = {("in-process", c.name, v) for c in cases.CASES for v in variants.VARIANTS}
    expected |= {
        ("sse-decoding", f"{f['name']}, 64 KiB chunks", v)
        for f in sse_decode.framings(10)
        for v in ("ours feed", "ours messages")
    }
    expected |= {
        ("network", "uvicorn, modern tools/call -> JSON", v) for v in variants.NETWORK_VARIANTS
    }
    expected |= {("streams", s["case"], "ours") for s in streams.build_streams(10, 0.01, 0.01)}
    scrape = {k for k in keys if k[0] == "scrape"}
    assert {k[2] for k in scrape} == {"ours, no scraper", "ours, with a scraper looping"}
    expected |= scrape
    # The proxy row: direct and proxied once ``mcp-metrics proxy`` exists, else a reason.
    from benchmarks import proxy_row

    if smoke["meta"]["proxy_skipped"] is None:
        expected |= {("proxy", proxy_row.CASE, v) for v in ("direct", "proxied")}
    else:
        assert not {k for k in keys if k[0] == "proxy"}
    assert keys == expected
    assert len(smoke["rows"]) == len(expected)


def test_rows_are_complete(smoke: dict) -> None:
    for row in smoke["rows"]:
        assert row["median"] > 0, row
        assert row["min"] <= row["median"] <= row["max"], row
        if row["variant"] != "bare" and row["section"] in ("in-process", "network"):
            assert row["ratio"] is not None, row
        if row["section"] == "network":
            assert row["errors"] == 0, row
        if row["section"] == "streams":
            assert row["extra_peak_bytes"] >= 0, row
        assert "note" not in row, row  # e.g. "ours" recorded fewer operations than it saw


def test_in_process_figures_follow_from_the_samples(smoke: dict) -> None:
    """Medians, paired differences and the share of instrumentator's added cost are
    recomputed from the raw per-round samples written to the JSON file."""
    rows = [r for r in smoke["rows"] if r["section"] == "in-process"]
    by_case: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_case.setdefault(row["case"], {})[row["variant"]] = row
    for case, variants in by_case.items():
        bare = variants["bare"]["samples"]
        for name, row in variants.items():
            assert len(row["samples"]) == len(bare), (case, name)
            assert row["median"] == pytest.approx(statistics.median(row["samples"]), abs=1e-3)
            if name != "bare":
                diffs = [v - b for v, b in zip(row["samples"], bare, strict=True)]
                assert row["overhead"] == pytest.approx(statistics.median(diffs), abs=1e-2)
        ours = variants["ours"]
        added = [o - b for o, b in zip(ours["samples"], bare, strict=True)]
        peer = [p - b for p, b in zip(variants["instrumentator"]["samples"], bare, strict=True)]
        shares = [o / p for o, p in zip(added, peer, strict=True) if p > 0]
        if shares:
            assert ours["share_of_instrumentator"] == pytest.approx(
                statistics.median(shares), rel=1e-3, abs=1e-3
            )
        assert "target" in ours and isinstance(ours["met"], bool)


def test_sse_decoding_and_scrape_rows_are_consistent(smoke: dict) -> None:
    rows = [r for r in smoke["rows"] if r["section"] == "sse-decoding"]
    by_case: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_case.setdefault(row["case"], {})[row["variant"]] = row
        assert row["median"] == pytest.approx(statistics.median(row["samples"]), rel=1e-3, abs=1e-2)
    for case, variants in by_case.items():
        # Every event of these framings carries a message: both views see them all.
        assert variants["ours feed"]["items"] == variants["ours messages"]["items"] > 0, case
        assert variants["ours feed"]["bytes"] == variants["ours messages"]["bytes"]
        assert variants["ours messages"]["target"].startswith(">= ")
    scrape = {r["variant"]: r for r in smoke["rows"] if r["section"] == "scrape"}
    alone, scraped = scrape["ours, no scraper"], scrape["ours, with a scraper looping"]
    for row in (alone, scraped):
        assert row["p99_ms"] >= row["median"] > 0
        assert row["series_exposed"] >= 2_000
    assert scraped["ratio"] == pytest.approx(scraped["median"] / alone["median"])
    assert scraped["scrapes_per_s"] > 0
    proxy = {r["variant"]: r for r in smoke["rows"] if r["section"] == "proxy"}
    if proxy:
        added = [
            p["p50_ms"] - d["p50_ms"]
            for p, d in zip(proxy["proxied"]["samples"], proxy["direct"]["samples"], strict=True)
        ]
        assert proxy["proxied"]["added_p50_ms"] == pytest.approx(statistics.median(added))


def test_table_and_meta(smoke: dict) -> None:
    meta = smoke["meta"]
    assert meta["mode"] == "smoke"
    assert meta["nproc"] >= 1 and meta["cpu"] and meta["python"]
    assert meta["load_generator"] in ("wrk", "asyncio-loadgen")
    assert meta["commit"]
    assert meta["packages"]["prometheus-fastapi-instrumentator"]
    assert meta["packages"]["starlette-exporter"]
    table = smoke["stdout"]
    for row in smoke["rows"]:
        assert row["case"] in table


def _module(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """``python -m benchmarks.<args>`` in the repository, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_against_runs_this_code_against_a_commit() -> None:
    proc = _module("benchmarks.against", "HEAD", "--rounds", "4", "-n", "20")
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0] for line in lines if not line.startswith(" ")] == ["json", "sse"]
    assert sum("ours / HEAD:" in line and "best blocks" in line for line in lines) == 2
    assert sum(line.strip().startswith("best blocks, added per request: ours +") for line in lines) == 2


def test_against_names_a_bad_commit_in_one_line() -> None:
    proc = _module("benchmarks.against", "no-such-commit", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "git failed" in proc.stderr


def test_against_splits_ours_into_layers() -> None:
    proc = _module("benchmarks.against", "--layers", "--rounds", "4", "-n", "20")
    assert proc.returncode == 0, proc.stderr[-4000:]
    layers = [line for line in proc.stdout.splitlines() if "layers of ours" in line]
    assert len(layers) == 2
    assert all("the tap +" in line and "the recorder +" in line for line in layers)


def test_bytecodes_counts_this_code_against_a_commit() -> None:
    proc = _module("benchmarks.bytecodes", "HEAD", "-n", "40", "--top", "3")
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    counts = [line for line in lines if "bytecodes added per request: ours +" in line]
    assert [line.split(":")[0] for line in counts] == ["json", "sse"]
    for line in counts:
        ours, head = (int(part.split("+")[1].replace(",", "")) for part in line.split(": ")[2].split("  "))
        assert ours > 0 and head > 0
