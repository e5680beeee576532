"""The `correlate` stage: how well does each proxy predict real task performance?

Per (group, seed): Spearman, Kendall tau-b and Pearson between the raw proxy value and
`task_performance` across candidate sets; mean over seeds, then over groups (the paper's
aggregation, the headline), with bootstrap CIs over candidate sets and top-k selection
quality (mean performance of the k best-ranked sets vs. all sets vs. the oracle).
"""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from omegaconf import DictConfig
from scipy import stats

from synque import SynqueError
from synque.stages.common import load_task
from synque.tracking import StageRun, log_table
from synque.tracking.read import logged_proxies, performance_values

MIN_SETS = 3


# --- statistics -----------------------------------------------------------------------------
def correlations(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Spearman, Kendall tau-b and Pearson of two equal-length vectors (NaN when undefined)."""
    if len(x) < MIN_SETS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"spearman": math.nan, "kendall": math.nan, "pearson": math.nan}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "spearman": float(stats.spearmanr(x, y).statistic),
            "kendall": float(stats.kendalltau(x, y, variant="b").statistic),
            "pearson": float(stats.pearsonr(x, y).statistic),
        }


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(axis=1) / denom, np.nan)


def batched_correlations(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """The three coefficients for each row of (B, n) arrays: the bootstrap's inner loop.

    Spearman is Pearson on average ranks (as scipy's); Kendall tau-b from pairwise signs.
    """
    rx = stats.rankdata(x, axis=1)
    ry = stats.rankdata(y, axis=1)
    sx = np.sign(x[:, :, None] - x[:, None, :])
    sy = np.sign(y[:, :, None] - y[:, None, :])
    concord = (sx * sy).sum(axis=(1, 2))
    denom = np.sqrt((sx * sx).sum(axis=(1, 2)) * (sy * sy).sum(axis=(1, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        kendall = np.where(denom > 0, concord / denom, np.nan)
    return {
        "spearman": _rowwise_pearson(rx, ry),
        "kendall": kendall,
        "pearson": _rowwise_pearson(x, y),
    }


def top_k(
    values: np.ndarray, perf: np.ndarray, k: int, higher_is_better: bool
) -> tuple[float, float]:
    """(mean performance of the k sets the proxy ranks best, oracle mean of the k best sets)."""
    k = min(k, len(values))
    order = np.argsort(-values if higher_is_better else values, kind="stable")
    return float(perf[order[:k]].mean()), float(np.sort(perf)[::-1][:k].mean())


# --- tables -----------------------------------------------------------------------------------
def select_performance(perf: pd.DataFrame, source: str) -> tuple[pd.DataFrame, str]:
    """Performance per (group, dataset) from the chosen source, averaged over train seeds."""
    if perf.empty:
        raise SynqueError(
            "correlate: no train runs logged for this task (run <task>_recorded first)"
        )
    sources = set(perf.source)
    if source == "auto":
        source = "recorded" if "recorded" in sources else sorted(sources)[0]
    if source not in sources:
        raise SynqueError(f"correlate: no '{source}' performance runs (have {sorted(sources)})")
    chosen = perf[perf.source == source]
    table = chosen.groupby(["group", "dataset"], as_index=False)["value"].mean()
    return table.rename(columns={"value": "performance"}), source


def per_group_seed(proxies: pd.DataFrame, perf: pd.DataFrame) -> pd.DataFrame:
    """One row per (proxy, group, seed): n and the three coefficients."""
    merged = proxies.merge(perf, on=["group", "dataset"], how="inner")
    rows = []
    for (proxy, group, seed), part in merged.groupby(["proxy", "group", "seed"], sort=True):
        coef = correlations(part.value.to_numpy(float), part.performance.to_numpy(float))
        rows.append({"proxy": proxy, "group": group, "seed": seed, "n": len(part), **coef})
    return pd.DataFrame(rows)


def _headline(frame: pd.DataFrame, column: str) -> float:
    by_group = frame.groupby("group")[column].mean()
    return float(by_group.mean()) if by_group.notna().any() else math.nan


def bootstrap(
    merged: pd.DataFrame, n_boot: int, confidence: float, rng: np.random.Generator
) -> dict[str, tuple[float, float]]:
    """Percentile CIs of the headline, resampling candidate sets within each group."""
    if n_boot <= 0:
        return {}
    per_group: list[dict[str, np.ndarray]] = []
    for _, gpart in merged.groupby("group"):
        datasets = sorted(gpart.dataset.unique())
        if len(datasets) < MIN_SETS:
            continue
        idx = rng.integers(0, len(datasets), size=(n_boot, len(datasets)))
        seed_coefs: list[dict[str, np.ndarray]] = []
        for _, spart in gpart.groupby("seed"):
            table = spart.set_index("dataset").reindex(datasets)
            if table.value.isna().any():
                continue
            x = table.value.to_numpy(float)[idx]
            y = table.performance.to_numpy(float)[idx]
            seed_coefs.append(batched_correlations(x, y))
        if seed_coefs:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                means = {k: np.nanmean([c[k] for c in seed_coefs], axis=0) for k in seed_coefs[0]}
            per_group.append(means)
    if not per_group:
        return {}
    alpha = (1 - confidence) / 2
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for key in per_group[0]:
            values = np.nanmean([g[key] for g in per_group], axis=0)
            lo, hi = np.nanquantile(values, [alpha, 1 - alpha])
            out[key] = (float(lo), float(hi))
    return out


def summarize(
    proxies: pd.DataFrame,
    perf: pd.DataFrame,
    top_ks: list[int],
    n_boot: int,
    confidence: float,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(correlations: one row per proxy/group/seed, summary: one row per proxy)."""
    detail = per_group_seed(proxies, perf)
    if detail.empty:
        raise SynqueError("correlate: no candidate set has both a proxy value and a performance")
    merged = proxies.merge(perf, on=["group", "dataset"], how="inner")
    rng = np.random.default_rng(seed)
    rows = []
    for proxy, part in merged.groupby("proxy", sort=True):
        hib = bool(part.higher_is_better.iloc[0])
        rows_p = detail[detail.proxy == proxy]
        row: dict[str, object] = {
            "proxy": proxy,
            "spearman": _headline(rows_p, "spearman"),
            "kendall": _headline(rows_p, "kendall"),
            "pearson": _headline(rows_p, "pearson"),
            "higher_is_better": hib,
            "n_groups": part.group.nunique(),
            "n_seeds": part.seed.nunique(),
            "n_datasets": part.groupby("group").dataset.nunique().sum(),
        }
        for key, (lo, hi) in bootstrap(part, n_boot, confidence, rng).items():
            row[f"{key}_lo"], row[f"{key}_hi"] = lo, hi
        top_rows = []
        for (_, _), gs in part.groupby(["group", "seed"]):
            v, p = gs.value.to_numpy(float), gs.performance.to_numpy(float)
            entry = {"group": gs.group.iloc[0], "mean_all": p.mean()}
            for k in top_ks:
                entry[f"top{k}"], entry[f"top{k}_oracle"] = top_k(v, p, k, hib)
            top_rows.append(entry)
        tops = pd.DataFrame(top_rows).groupby("group").mean(numeric_only=True).mean()
        row.update({k: float(v) for k, v in tops.items()})
        rows.append(row)
    summary = pd.DataFrame(rows).sort_values("spearman", ascending=False, na_position="last")
    return detail, summary.reset_index(drop=True)


# --- plots ------------------------------------------------------------------------------------
def scatter_plots(merged: pd.DataFrame, summary: pd.DataFrame, folder: Path) -> list[Path]:
    """One scatter per proxy (proxy value vs. performance, colour = seed, panel = group)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for proxy, part in merged.groupby("proxy"):
        groups = sorted(part.group.unique())[:16]
        cols = min(4, len(groups))
        rows = math.ceil(len(groups) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
        for ax, group in zip(axes.flat, groups, strict=False):
            gpart = part[part.group == group]
            for seed, spart in gpart.groupby("seed"):
                ax.scatter(spart.value, spart.performance, s=14, alpha=0.75, label=f"seed {seed}")
            ax.set_title(group if group != "all" else str(proxy), fontsize=9)
            ax.set_xlabel(str(proxy))
            ax.set_ylabel("task performance")
        for ax in list(axes.flat)[len(groups) :]:
            ax.axis("off")
        stats_row = summary[summary.proxy == proxy].iloc[0]
        fig.suptitle(
            f"{proxy}: Spearman {stats_row.spearman:.3f}, Kendall {stats_row.kendall:.3f}, "
            f"Pearson {stats_row.pearson:.3f}",
            fontsize=10,
        )
        axes.flat[0].legend(fontsize=7)
        fig.tight_layout()
        path = folder / f"scatter_{str(proxy).replace('@', '_at_')}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    # overview: headline Spearman with CI per proxy
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(summary), 3.2))
    xs = np.arange(len(summary))
    ax.bar(xs, summary.spearman.fillna(0), color="#4c72b0")
    if "spearman_lo" in summary:
        err = np.vstack(
            [summary.spearman - summary.spearman_lo, summary.spearman_hi - summary.spearman]
        )
        ax.errorbar(xs, summary.spearman, yerr=np.nan_to_num(err), fmt="none", color="k")
    labels = [
        p if hib else f"{p} (lower=better)"
        for p, hib in zip(summary.proxy, summary.higher_is_better, strict=True)
    ]
    ax.set_xticks(xs, labels, rotation=30, ha="right")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylabel("Spearman (mean over seeds, groups)")
    fig.tight_layout()
    path = folder / "summary_spearman.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [*paths, path]


def print_summary(summary: pd.DataFrame, title: str, top_ks: list[int]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("proxy", "spearman", "kendall", "pearson"):
        table.add_column(col, justify="left" if col == "proxy" else "right")
    table.add_column("spearman CI", justify="right")
    for k in top_ks:
        table.add_column(f"top-{k} / oracle", justify="right")
    table.add_column("mean all", justify="right")
    for row in summary.itertuples(index=False):
        ci = (
            f"[{row.spearman_lo:.2f}, {row.spearman_hi:.2f}]"
            if hasattr(row, "spearman_lo") and not math.isnan(row.spearman_lo)
            else "-"
        )
        tops = [
            f"{getattr(row, f'top{k}'):.3f} / {getattr(row, f'top{k}_oracle'):.3f}" for k in top_ks
        ]
        table.add_row(
            str(row.proxy),
            f"{row.spearman:.3f}",
            f"{row.kendall:.3f}",
            f"{row.pearson:.3f}",
            ci,
            *tops,
            f"{row.mean_all:.3f}",
        )
    Console(width=160).print(table)


def metric_key(proxy: str) -> str:
    """MLflow metric names cannot hold '@': `pad@xgboost` -> `pad.xgboost`."""
    return proxy.replace("@", ".")


# --- the stage --------------------------------------------------------------------------------
def run_correlate(cfg: DictConfig) -> pd.DataFrame:
    """Read proxies and performance back from MLflow, correlate, log and print."""
    scfg = cfg.stage
    task = load_task(cfg)
    job = StageRun(cfg, "correlate", task.name)
    proxies = logged_proxies(job.client, task.name, scfg, "correlate")
    perf_all = performance_values(job.client, task.name)
    perf, source = select_performance(perf_all, str(scfg.performance))
    top_ks = [int(k) for k in scfg.top_k]
    detail, summary = summarize(
        proxies, perf, top_ks, int(scfg.bootstrap), float(scfg.confidence), seed=int(cfg.seed)
    )
    merged = proxies.merge(perf, on=["group", "dataset"], how="inner")
    with job:
        mlflow.set_tag("synque.performance_source", source)
        mlflow.log_params(
            {"input_runs": merged.run_id.nunique(), "proxies_found": ",".join(summary.proxy)}
        )
        log_table(detail, "correlations.csv")
        log_table(summary, "summary.csv")
        metrics = {}
        for row in summary.itertuples(index=False):
            for coef in ("spearman", "kendall", "pearson"):
                value = getattr(row, coef)
                if not math.isnan(value):
                    metrics[f"{coef}.{metric_key(row.proxy)}"] = value
        agreement = _source_agreement(perf_all)
        if agreement is not None:
            metrics["spearman.trained_vs_recorded"] = agreement
        mlflow.log_metrics(metrics)
        if scfg.plots:
            with tempfile.TemporaryDirectory() as tmp:
                for path in scatter_plots(merged, summary, Path(tmp)):
                    mlflow.log_artifact(str(path), "plots")
        run_id = mlflow.active_run().info.run_id
    print_summary(
        summary, f"synque-{task.name}: proxy vs. {source} performance ({run_id[:8]})", top_ks
    )
    if agreement is not None:
        print(f"Spearman between trained and recorded performance: {agreement:.3f}")
    return summary


def _source_agreement(perf_all: pd.DataFrame) -> float | None:
    """Spearman between trained and recorded performance, where both exist."""
    if perf_all.empty or set(perf_all.source) < {"trained", "recorded"}:
        return None
    table = perf_all.groupby(["source", "group", "dataset"])["value"].mean().unstack("source")
    table = table.dropna()
    if len(table) < MIN_SETS:
        return None
    return float(stats.spearmanr(table.trained, table.recorded).statistic)
