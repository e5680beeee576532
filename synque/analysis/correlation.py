"""How well does each proxy predict real task performance? (the maths of `correlate`)

Per (proxy, group, seed): Spearman, Kendall tau-b and Pearson between the raw proxy value and
task performance across candidate sets; the headline is the mean over seeds within a group,
then the mean over groups (the paper's aggregation). Bootstrap CIs resample candidate sets
within each group; top-k compares the mean performance of the k sets a proxy ranks best with
the mean of all sets and the oracle top-k.

Tables in and out are polars; scipy computes the coefficients, numpy the bootstrap's inner
loop. An undefined coefficient (fewer than three sets, a constant column) is null.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import polars as pl
import polars.selectors as cs
from scipy import stats

from synque import SynqueError

MIN_SETS = 3
COEFFICIENTS = ("spearman", "kendall", "pearson")
KEYS = ["group", "dataset"]


# --- coefficients ---------------------------------------------------------------------------
def correlations(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Spearman, Kendall tau-b and Pearson of two equal-length vectors (NaN when undefined)."""
    if len(x) < MIN_SETS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return dict.fromkeys(COEFFICIENTS, math.nan)
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

    Calling scipy B times per group and seed is what made the bootstrap slow; Spearman is
    Pearson on average ranks (as scipy's), Kendall tau-b comes from pairwise signs.
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
    """(mean performance of the k sets the proxy ranks best, oracle mean of the k best sets).

    Ties in the proxy value keep the input order (callers pass sets sorted by name).
    """
    k = min(k, len(values))
    order = np.argsort(-values if higher_is_better else values, kind="stable")
    return float(perf[order[:k]].mean()), float(np.sort(perf)[::-1][:k].mean())


# --- tables ---------------------------------------------------------------------------------
def select_performance(perf: pl.DataFrame, source: str) -> tuple[pl.DataFrame, str]:
    """Performance per (group, dataset) from the chosen source, averaged over train seeds."""
    if perf.is_empty():
        raise SynqueError(
            "correlate: no train runs logged for this task (run <task>_recorded first)"
        )
    sources = sorted(perf["source"].unique().to_list())
    if source == "auto":
        source = "recorded" if "recorded" in sources else sources[0]
    if source not in sources:
        raise SynqueError(f"correlate: no '{source}' performance runs (have {sources})")
    table = (
        perf.filter(pl.col("source") == source)
        .group_by(KEYS)
        .agg(pl.col("value").mean().alias("performance"))
        .sort(KEYS)
    )
    return table, source


def join_performance(proxies: pl.DataFrame, perf: pl.DataFrame) -> pl.DataFrame:
    """Proxy rows that have a performance, sorted by (proxy, group, seed, dataset).

    The sort fixes every later order: per-group loops, the bootstrap's resampled sets and
    top-k's tie-breaking never depend on the order runs were logged or read.
    """
    return proxies.join(perf.select(*KEYS, "performance"), on=KEYS, how="inner").sort(
        "proxy", "group", "seed", "dataset"
    )


def _nan_to_null(frame: pl.DataFrame) -> pl.DataFrame:
    """Undefined coefficients are NaN in numpy and null in tables (means skip them)."""
    return frame.with_columns(cs.float().fill_nan(None))


def per_group_seed(merged: pl.DataFrame) -> pl.DataFrame:
    """One row per (proxy, group, seed): n and the three coefficients."""
    parts = merged.group_by("proxy", "group", "seed", maintain_order=True).agg(
        "value", "performance"
    )
    rows = []
    for row in parts.iter_rows(named=True):
        x, y = np.asarray(row["value"], float), np.asarray(row["performance"], float)
        keys = {name: row[name] for name in ("proxy", "group", "seed")}
        rows.append({**keys, "n": len(x), **correlations(x, y)})
    schema = {"proxy": pl.String, "group": pl.String, "seed": pl.String, "n": pl.Int64}
    schema.update(dict.fromkeys(COEFFICIENTS, pl.Float64))
    return _nan_to_null(pl.DataFrame(rows, schema=schema))


def headline(detail: pl.DataFrame) -> pl.DataFrame:
    """Per proxy: each coefficient's mean over seeds within a group, then over groups."""
    return (
        detail.group_by("proxy", "group", maintain_order=True)  # sums in a fixed order
        .agg(pl.col(COEFFICIENTS).mean())
        .group_by("proxy", maintain_order=True)
        .agg(pl.col(COEFFICIENTS).mean())
    )


def _group_arrays(part: pl.DataFrame, datasets: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(values, performance) per seed of one group, aligned to `datasets`; seeds missing a
    set are left out (the resample indexes the same sets for every seed)."""
    frame = pl.DataFrame({"dataset": datasets})
    arrays = []
    for _, seed_part in part.group_by("seed", maintain_order=True):
        table = frame.join(seed_part, on="dataset", how="left", maintain_order="left")
        x = table["value"].to_numpy().astype(float)
        y = table["performance"].to_numpy().astype(float)
        if not np.isnan(x).any():
            arrays.append((x, y))
    return arrays


def draw_counts(idx: np.ndarray) -> np.ndarray:
    """(B, n) counts: how many times each of n sets is in each row of resample indices."""
    n_boot, n = idx.shape
    flat = (idx + n * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(float)


def _quadratic(counts: np.ndarray, mats: np.ndarray) -> np.ndarray:
    """c_b^T M_s c_b for every resample b (rows of counts) and matrix s: (B, S)."""
    n_mats, n, _ = mats.shape
    left = counts @ mats.transpose(1, 0, 2).reshape(n, n_mats * n)
    return (left.reshape(-1, n_mats, n) * counts[:, None, :]).sum(axis=2)


def _resampled_ranks(v: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(B, S, n): the average rank (as scipy's) set k would have in resample b of seed s:
    the drawn values below it, plus half of the drawn values equal to it, plus a half."""
    n_seeds, n = v.shape
    below = (v[:, None, :] < v[:, :, None]) + 0.5 * (v[:, None, :] == v[:, :, None])
    return (counts @ below.transpose(2, 0, 1).reshape(n, n_seeds * n)).reshape(-1, n_seeds, n) + 0.5


def _weighted_pearson(a: np.ndarray, b: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Pearson of (B, S, n) values where set k counts `counts[b, k]` times: (B, S)."""
    w = counts[:, None, :]
    n = counts[0].sum()
    da = a - (w * a).sum(axis=2, keepdims=True) / n
    db = b - (w * b).sum(axis=2, keepdims=True) / n
    cov = (w * da * db).sum(axis=2)
    den = np.sqrt((w * da * da).sum(axis=2) * (w * db * db).sum(axis=2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, cov / den, np.nan)


def resampled_correlations(
    x: np.ndarray, y: np.ndarray, counts: np.ndarray
) -> dict[str, np.ndarray]:
    """The three coefficients of every resample and seed, from draw counts: (B, S) each.

    `x`, `y` are (S, n) (one row per seed, NaN-free), `counts` (B, n). Equal to
    `batched_correlations(x[s][idx], y[s][idx])` (to float rounding; tested) but a
    resample's pairwise sign sums and average ranks are linear in its counts, so every seed
    and resample costs a few matrix products instead of B sign arrays of n x n per seed:
    this is what keeps correlate fast on large studies.
    """
    sx = np.sign(x[:, :, None] - x[:, None, :])
    sy = np.sign(y[:, :, None] - y[:, None, :])
    concord = _quadratic(counts, sx * sy)
    denom = np.sqrt(_quadratic(counts, sx * sx) * _quadratic(counts, sy * sy))
    with np.errstate(invalid="ignore", divide="ignore"):
        kendall = np.where(denom > 0, concord / denom, np.nan)
    shape = (counts.shape[0], *x.shape)
    return {
        "spearman": _weighted_pearson(
            _resampled_ranks(x, counts), _resampled_ranks(y, counts), counts
        ),
        "kendall": kendall,
        "pearson": _weighted_pearson(np.broadcast_to(x, shape), np.broadcast_to(y, shape), counts),
    }


def bootstrap(
    part: pl.DataFrame, n_boot: int, confidence: float, rng: np.random.Generator
) -> dict[str, tuple[float, float]]:
    """Percentile CIs of one proxy's headline, resampling candidate sets within each group.

    `part` is one proxy's rows of `join_performance` (sorted): groups are visited in name
    order and each group's sets are indexed in name order, so a seed gives the same CIs.
    Within a group every seed is resampled with the same draw; a resample's coefficient is
    the mean over seeds, then over groups, as the headline is.
    """
    if n_boot <= 0:
        return {}
    per_group: list[dict[str, np.ndarray]] = []
    for _, gpart in part.group_by("group", maintain_order=True):
        datasets = sorted(gpart["dataset"].unique().to_list())
        if len(datasets) < MIN_SETS:
            continue
        idx = rng.integers(0, len(datasets), size=(n_boot, len(datasets)))
        arrays = _group_arrays(gpart, datasets)
        if not arrays:
            continue
        x = np.stack([a for a, _ in arrays])
        y = np.stack([b for _, b in arrays])
        if np.isnan(y).any():  # a missing performance: resample the seeds one by one
            seed_coefs = [batched_correlations(xs[idx], ys[idx]) for xs, ys in arrays]
            coefs = {k: np.stack([c[k] for c in seed_coefs], axis=1) for k in COEFFICIENTS}
        else:
            coefs = resampled_correlations(x, y, draw_counts(idx))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            per_group.append({k: np.nanmean(coefs[k], axis=1) for k in COEFFICIENTS})
    if not per_group:
        return {}
    alpha = (1 - confidence) / 2
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for key in COEFFICIENTS:
            values = np.nanmean([g[key] for g in per_group], axis=0)
            lo, hi = np.nanquantile(values, [alpha, 1 - alpha])
            out[key] = (float(lo), float(hi))
    return out


def top_k_means(part: pl.DataFrame, top_ks: list[int], higher_is_better: bool) -> dict[str, float]:
    """One proxy's top-k and oracle top-k (and the mean of all sets), averaged like the
    headline: per (group, seed), then mean over seeds, then over groups; `regret<k>` is the
    oracle top-k minus the top-k (0 = the proxy picks as well as the labels would)."""
    rows = []
    for (group, _), gs in part.group_by("group", "seed", maintain_order=True):
        v, p = gs["value"].to_numpy().astype(float), gs["performance"].to_numpy().astype(float)
        entry: dict[str, object] = {"group": group, "mean_all": float(p.mean())}
        for k in top_ks:
            entry[f"top{k}"], entry[f"top{k}_oracle"] = top_k(v, p, k, higher_is_better)
        rows.append(entry)
    columns = [c for c in rows[0] if c != "group"]
    means = pl.DataFrame(rows).group_by("group", maintain_order=True).agg(pl.col(columns).mean())
    means = means.select(columns)
    out = means.mean().row(0, named=True)
    for k in top_ks:  # what choosing by this proxy costs against choosing with the labels
        out[f"regret{k}"] = out[f"top{k}_oracle"] - out[f"top{k}"]
    return out


def summarize(
    proxies: pl.DataFrame,
    perf: pl.DataFrame,
    top_ks: list[int],
    n_boot: int,
    confidence: float,
    seed: int = 0,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(correlations: one row per proxy/group/seed, summary: one row per proxy).

    `proxies` has columns proxy, group, dataset, seed, value, higher_is_better;
    `perf` has group, dataset, performance (see `select_performance`). The summary is
    sorted by headline Spearman, best first; with `n_boot > 0` it has `<coef>_lo/_hi`.
    """
    merged = join_performance(proxies, perf)
    detail = per_group_seed(merged)
    if detail.is_empty():
        raise SynqueError("correlate: no candidate set has both a proxy value and a performance")
    heads = headline(detail)
    rng = np.random.default_rng(seed)
    rows = []
    for (proxy,), part in merged.group_by("proxy", maintain_order=True):
        hib = bool(part["higher_is_better"][0])
        row: dict[str, object] = heads.filter(pl.col("proxy") == proxy).row(0, named=True)
        row.update(
            higher_is_better=hib,
            n_groups=part["group"].n_unique(),
            n_seeds=part["seed"].n_unique(),
            n_datasets=part.group_by("group").agg(pl.col("dataset").n_unique())["dataset"].sum(),
        )
        if n_boot > 0:
            cis = bootstrap(part, n_boot, confidence, rng)
            for key in COEFFICIENTS:
                row[f"{key}_lo"], row[f"{key}_hi"] = cis.get(key, (None, None))
        row.update(top_k_means(part, top_ks, hib))
        rows.append(row)
    coefficients = cs.by_name(*COEFFICIENTS) | cs.matches(r"_(lo|hi)$")  # null when undefined
    summary = pl.DataFrame(rows, infer_schema_length=None)
    summary = _nan_to_null(summary.with_columns(coefficients.cast(pl.Float64)))
    summary = summary.sort("spearman", descending=True, nulls_last=True, maintain_order=True)
    return detail, summary


def source_agreement(perf_all: pl.DataFrame) -> float | None:
    """Spearman between trained and recorded performance of the same sets, where both exist."""
    if perf_all.is_empty() or not {"trained", "recorded"} <= set(perf_all["source"]):
        return None
    table = (
        perf_all.group_by("source", *KEYS)
        .agg(pl.col("value").mean())
        .pivot(on="source", index=KEYS, values="value")
        .drop_nulls(["trained", "recorded"])
        .sort(KEYS)
    )
    if len(table) < MIN_SETS:
        return None
    return float(stats.spearmanr(table["trained"], table["recorded"]).statistic)
