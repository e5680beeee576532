"""Plots of a correlate run: one scatter per proxy and an overview of headline Spearman.

Inputs are the polars tables of `synque.analysis.correlation`. Bootstrap intervals may sit at
the edge of their point estimate (a proxy that orders every set perfectly has Spearman 1 and
an interval [1, 1] up to rounding) or even exclude it (percentile intervals need not contain
the mean of the per-group coefficients), so error bars are clipped at zero before drawing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_PANELS = 16
#: Resolution of every saved plot (file or MLflow figure artifact).
DPI = 110


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure outside pyplot's global state (nothing to close, safe in any thread), drawn
    with Agg so that no display is ever needed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def fmt(value: float | None, spec: str = ".3f") -> str:
    """A number for a title or a table cell; '-' for an undefined (null/NaN) one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def interval_error_bars(point: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(2, n) distances below and above each point for `errorbar`: never negative, 0 where
    the point or its interval is undefined."""
    below = np.nan_to_num(np.asarray(point, float) - np.asarray(lo, float))
    above = np.nan_to_num(np.asarray(hi, float) - np.asarray(point, float))
    return np.clip(np.vstack([below, above]), 0.0, None)


def file_stem(proxy: str) -> str:
    return proxy.replace("@", "_at_")


def scatter_figure(part: pl.DataFrame, proxy: str, title: str) -> Figure:
    """Proxy value vs. performance of one proxy: one panel per group, colour = seed."""
    groups = sorted(part["group"].unique().to_list())[:MAX_PANELS]
    cols = min(4, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig = new_figure((4 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, group in zip(axes.flat, groups, strict=False):
        gpart = part.filter(pl.col("group") == group)
        for (seed,), spart in gpart.group_by("seed", maintain_order=True):
            ax.scatter(
                spart["value"].to_numpy(),
                spart["performance"].to_numpy(),
                s=14,
                alpha=0.75,
                label=f"seed {seed}",
            )
        ax.set_title(group if group != "all" else proxy, fontsize=9)
        ax.set_xlabel(proxy)
        ax.set_ylabel("task performance")
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def overview_figure(summary: pl.DataFrame) -> Figure:
    """Headline Spearman per proxy as bars, with its bootstrap interval when there is one."""
    fig = new_figure((1.2 + 0.9 * len(summary), 3.2))
    ax = fig.subplots()
    xs = np.arange(len(summary))
    spearman = summary["spearman"].cast(pl.Float64).to_numpy()
    ax.bar(xs, np.nan_to_num(spearman), color="#4c72b0")
    if "spearman_lo" in summary.columns:
        err = interval_error_bars(
            spearman, summary["spearman_lo"].to_numpy(), summary["spearman_hi"].to_numpy()
        )
        ax.errorbar(xs, np.nan_to_num(spearman), yerr=err, fmt="none", color="k")
    labels = [
        p if hib else f"{p} (lower=better)"
        for p, hib in zip(summary["proxy"], summary["higher_is_better"], strict=True)
    ]
    ax.set_xticks(xs, labels, rotation=30, ha="right")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylabel("Spearman (mean over seeds, groups)")
    fig.tight_layout()
    return fig


def correlation_figures(
    merged: pl.DataFrame, summary: pl.DataFrame
) -> Iterator[tuple[str, Figure]]:
    """Every figure of a correlate run with its file name: `scatter_<proxy>.png` per proxy,
    then `summary_spearman.png`. `merged` has proxy, group, seed, value, performance.

    Drawn one at a time as the caller asks (a figure is dropped once it is saved)."""
    for row in summary.iter_rows(named=True):
        proxy = str(row["proxy"])
        title = (
            f"{proxy}: Spearman {fmt(row['spearman'])}, Kendall {fmt(row['kendall'])}, "
            f"Pearson {fmt(row['pearson'])}"
        )
        part = merged.filter(pl.col("proxy") == proxy)
        yield f"scatter_{file_stem(proxy)}.png", scatter_figure(part, proxy, title)
    yield "summary_spearman.png", overview_figure(summary)


def correlation_plots(merged: pl.DataFrame, summary: pl.DataFrame, folder: Path) -> list[Path]:
    """`correlation_figures` saved as PNG files into `folder`; their paths."""
    paths = []
    for name, figure in correlation_figures(merged, summary):
        figure.savefig(folder / name, dpi=DPI)
        paths.append(folder / name)
    return paths
