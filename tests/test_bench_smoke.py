"""The benchmark script runs end to end and produces every row (no timing assertions)."""

from __future__ import annotations

import json
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
    from benchmarks import cases, streams, variants

    keys = {(r["section"], r["case"], r["variant"]) for r in smoke["rows"]}
    expected = {("in-process", c.name, v) for c in cases.CASES for v in variants.VARIANTS}
    expected |= {
        ("network", "uvicorn, modern tools/call -> JSON", v) for v in variants.NETWORK_VARIANTS
    }
    expected |= {("streams", s["case"], "ours") for s in streams.build_streams(10, 0.01, 0.01)}
    assert keys == expected
    assert len(smoke["rows"]) == len(expected)


def test_rows_are_complete(smoke: dict) -> None:
    for row in smoke["rows"]:
        assert row["median"] > 0, row
        assert row["min"] <= row["median"] <= row["max"], row
        if row["variant"] != "bare":
            assert row["ratio"] is not None, row
        if row["section"] == "network":
            assert row["errors"] == 0, row
        if row["section"] == "streams":
            assert row["extra_peak_bytes"] >= 0, row
        assert "note" not in row, row  # e.g. "ours" recorded fewer operations than it saw


def test_table_and_meta(smoke: dict) -> None:
    meta = smoke["meta"]
    assert meta["mode"] == "smoke"
    assert meta["nproc"] >= 1 and meta["cpu"] and meta["python"]
    assert meta["load_generator"] in ("wrk", "asyncio-loadgen")
    table = smoke["stdout"]
    for row in smoke["rows"]:
        assert row["case"] in table
