"""Plots at the edges: intervals that touch or exclude their point, undefined values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from synque.analysis import correlation_plots, interval_error_bars


def test_error_bars_are_clipped_and_defined() -> None:
    point = np.array([1.0000000000000002, 0.5, -1.0, np.nan, 0.2])
    lo = np.array([1.0, 0.6, -1.0, 0.1, np.nan])  # 0.6 > 0.5: the interval excludes its point
    hi = np.array([1.0, 0.9, -0.9999999999999998, 0.3, np.nan])
    err = interval_error_bars(point, lo, hi)
    assert err.shape == (2, 5)
    assert (err >= 0).all() and np.isfinite(err).all()
    assert err[:, 1] == pytest.approx([0.0, 0.4])
    assert err[:, 3].tolist() == [0.0, 0.0] and err[:, 4].tolist() == [0.0, 0.0]


def test_plots_draw_intervals_at_the_edge(tmp_path: Path) -> None:
    summary = pl.DataFrame(
        {
            "proxy": ["mmd", "lens@x"],
            "spearman": [-1.0000000000000002, None],
            "kendall": [-1.0, None],
            "pearson": [-0.98, None],
            "higher_is_better": [False, True],
            "spearman_lo": [-1.0, None],
            "spearman_hi": [-1.0, None],
        },
        schema_overrides={"spearman_lo": pl.Float64, "spearman_hi": pl.Float64},
    )
    merged = pl.DataFrame(
        {
            "proxy": ["mmd"] * 3 + ["lens@x"] * 3,
            "group": "all",
            "seed": "1",
            "value": [0.1, 0.2, 0.3, 0.5, 0.5, 0.5],
            "performance": [0.9, 0.8, 0.7, 0.9, 0.8, 0.7],
        }
    )
    paths = correlation_plots(merged, summary, tmp_path)
    assert [p.name for p in paths] == [
        "scatter_mmd.png",
        "scatter_lens_at_x.png",
        "summary_spearman.png",
    ]
    assert all(p.stat().st_size > 1000 for p in paths)
