"""Medians, ranges and paired comparisons over alternated rounds."""

from __future__ import annotations

import statistics
from typing import Any


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def paired(values: list[float], base: list[float]) -> dict[str, Any]:
    """Per-round differences and ratios against the baseline measured in the same round."""
    diffs = [v - b for v, b in zip(values, base, strict=True)]
    ratios = [v / b for v, b in zip(values, base, strict=True) if b]
    return {
        "overhead": statistics.median(diffs),
        "overhead_min": min(diffs),
        "overhead_max": max(diffs),
        "ratio": statistics.median(ratios) if ratios else None,
    }
