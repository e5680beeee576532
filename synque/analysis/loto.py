"""Leave-one-task-out (LOTO): learn a selection rule on other tasks, score it on the one left.

A rule whose weights saw the scored task's performance would look better than it is, so
every learned rule is fitted on `training_tasks(tables, scored)`, which drops the scored
task before anything is computed (tests/analysis/test_loto.py poisons the scored task's
labels and checks the learned weights do not move). The scored task contributes only what
`select` would know without labels: which proxies were logged.

Learners:
- `learn_weights`: the weights of a weighted mean rank, searched on a simplex grid to
  maximise the mean over training tasks of the headline Spearman (mean over seeds, then
  groups), ties broken towards equal weights;
- `learn_single`: the one proxy with the best mean Spearman on the training tasks.

`loto_table` then scores every rule on every task like `correlate` does (Spearman with a
bootstrap CI, top-k, oracle, regret), one row per (task, rule).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

from synque import SynqueError
from synque.analysis.correlation import summarize
from synque.analysis.rules import (
    RULE_PREFIX,
    SelectionRule,
    SingleProxy,
    WeightedRank,
    base_name,
    rule_values,
)
from synque.analysis.selection import oriented_ranks


@dataclass(frozen=True)
class TaskTables:
    """One task's study: proxy values (proxy, group, dataset, seed, value, higher_is_better)
    and performance (group, dataset, performance)."""

    proxies: pl.DataFrame
    performance: pl.DataFrame

    @property
    def names(self) -> list[str]:
        """The metric names (`pad`, not `pad@embedder`) of the proxies logged."""
        return sorted({base_name(p) for p in self.proxies["proxy"].unique().to_list()})


def training_tasks(tables: Mapping[str, TaskTables], scored: str) -> dict[str, TaskTables]:
    """Every task but the scored one: the only data a rule for `scored` may learn from."""
    if scored not in tables:
        raise SynqueError(f"loto: no study for task {scored} (have {sorted(tables)})")
    return {task: t for task, t in tables.items() if task != scored}


# --- fast scoring of many weight vectors ----------------------------------------------------
Unit = tuple[np.ndarray, np.ndarray]  # (oriented ranks [sets, proxies], performance [sets])


def task_units(tables: TaskTables, names: list[str]) -> list[list[Unit]]:
    """Per group, per seed: the oriented rank matrix over `names` and the performance.

    A proxy the task lacks is a column of mid ranks (it carries no information), and so is
    a proxy that failed on a set; the weights then simply do not matter for it.
    """
    frame = oriented_ranks(tables.proxies).with_columns(
        pl.col("proxy").map_elements(base_name, return_dtype=pl.String)
    )
    if frame.select("proxy", "group", "dataset", "seed").is_duplicated().any():
        raise SynqueError("loto: one metric logged under several variants; keep one per task")
    wide = frame.pivot(on="proxy", index=["group", "seed", "dataset"], values="rank")
    wide = wide.join(tables.performance, on=["group", "dataset"], how="inner")
    out = []
    for _, gpart in wide.sort("group", "seed", "dataset").group_by("group", maintain_order=True):
        units = []
        for _, part in gpart.group_by("seed", maintain_order=True):
            n = part.height
            cols = [
                part[name].to_numpy().astype(float) if name in part.columns else np.full(n, np.nan)
                for name in names
            ]
            ranks = np.column_stack(cols) if cols else np.empty((n, 0))
            ranks = np.where(np.isnan(ranks), (n + 1) / 2, ranks)
            units.append((ranks, part["performance"].to_numpy().astype(float)))
        out.append(units)
    return out


def simplex_grid(n: int, step: float) -> np.ndarray:
    """Every weight vector of `n` non-negative multiples of `step` summing to 1: [G, n]."""
    parts = round(1 / step)
    rows = [
        np.diff([0, *cut, parts + n]) - 1
        for cut in itertools.combinations(range(1, parts + n), n - 1)
    ]
    return np.asarray(rows, dtype=float).reshape(-1, n) / parts


def _spearman_columns(scores: np.ndarray, perf: np.ndarray) -> np.ndarray:
    """Spearman of every column of `scores` [sets, G] (lower = better) with `perf`."""
    rs = stats.rankdata(-scores, axis=0)
    rp = stats.rankdata(perf)
    rs = rs - rs.mean(axis=0)
    rp = rp - rp.mean()
    denom = np.sqrt((rs * rs).sum(axis=0) * (rp * rp).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (rs * rp[:, None]).sum(axis=0) / denom, np.nan)


def grid_objective(per_task: list[list[list[Unit]]], weights: np.ndarray) -> np.ndarray:
    """Mean over tasks of the headline Spearman of each weight vector ([G, proxies] -> [G]).

    Headline as in correlate: mean over seeds within a group, then over groups; a task on
    which a weight vector is undefined (constant ranking) counts as 0, no information.
    """
    heads = []
    for groups in per_task:
        group_means = []
        for units in groups:
            seeds = [_spearman_columns(r @ weights.T, y) for r, y in units if len(y) >= 3]
            if seeds:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    group_means.append(np.nanmean(seeds, axis=0))
        if group_means:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                heads.append(np.nan_to_num(np.nanmean(group_means, axis=0)))
    if not heads:
        raise SynqueError("loto: no training task has three candidate sets with performance")
    return np.mean(heads, axis=0)


def learn_weights(
    training: Mapping[str, TaskTables], names: list[str], step: float = 0.1
) -> dict[str, float]:
    """Weights over `names` maximising the mean training Spearman of the weighted rank.

    Among equally good vectors the one closest to equal weights wins, so a proxy no training
    task tells anything about keeps an even share rather than an arbitrary one.
    """
    names = [n for n in names if any(n in t.names for t in training.values())]
    if not names:
        raise SynqueError("loto: the training tasks share no proxy with the scored task")
    grid = simplex_grid(len(names), step)
    per_task = [task_units(t, names) for t in training.values()]
    score = np.round(grid_objective(per_task, grid), 9)
    best = np.flatnonzero(score == score.max())
    spread = ((grid[best] - 1 / len(names)) ** 2).sum(axis=1)
    chosen = grid[best[int(np.argmin(spread))]]
    return {n: float(w) for n, w in zip(names, chosen, strict=True)}


def learn_single(training: Mapping[str, TaskTables], names: list[str]) -> str:
    """The proxy among `names` with the best mean training Spearman (oriented)."""
    names = [n for n in names if any(n in t.names for t in training.values())]
    if not names:
        raise SynqueError("loto: the training tasks share no proxy with the scored task")
    per_task = [task_units(t, names) for t in training.values()]
    return names[int(np.argmax(grid_objective(per_task, np.eye(len(names)))))]


def loto_rules(
    tables: Mapping[str, TaskTables], scored: str, step: float = 0.1
) -> dict[str, SelectionRule]:
    """The learned rules for `scored`, each fitted on the other tasks only."""
    training = training_tasks(tables, scored)
    names = tables[scored].names
    learned = WeightedRank(learn_weights(training, names, step))
    learned.name = "learned_rank"
    single = SingleProxy(learn_single(training, names))
    single.name = "learned_single"
    return {"learned_rank": learned, "learned_single": single}


# --- the table ------------------------------------------------------------------------------
def score_rules(
    tables: TaskTables,
    rules: Mapping[str, SelectionRule],
    top_ks: list[int],
    n_boot: int,
    confidence: float,
    seed: int = 0,
) -> pl.DataFrame:
    """One task's summary (correlate's columns) for every rule, `rule` = its name."""
    parts = []
    for name, rule in rules.items():
        rule.name = name
        parts.append(rule_values(tables.proxies, rule))
    _, summary = summarize(pl.concat(parts), tables.performance, top_ks, n_boot, confidence, seed)
    return summary.with_columns(pl.col("proxy").str.strip_prefix(RULE_PREFIX).alias("rule"))


def loto_table(
    tables: Mapping[str, TaskTables],
    rules: Mapping[str, SelectionRule],
    top_ks: list[int] = (1, 3),  # type: ignore[assignment]
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    step: float = 0.1,
) -> tuple[pl.DataFrame, dict[str, dict[str, float]]]:
    """(one row per task and rule, {task: learned weights used to score it}).

    Rules scored on each task: the fixed `rules`, the learned ones (fitted without the
    task) and every single proxy of the task (`proxy:<name>`, the oracle choice's pool).
    Columns: task, rule, kind (fixed | learned | proxy), then correlate's summary columns.
    """
    rows, weights = [], {}
    for task, t in tables.items():
        learned = loto_rules(tables, task, step)
        learned_rank = learned["learned_rank"]
        assert isinstance(learned_rank, WeightedRank)
        weights[task] = learned_rank.weights
        singles = {f"proxy:{n}": SingleProxy(n) for n in t.names}
        every = {**dict(rules), **learned, **singles}
        kinds = {**dict.fromkeys(rules, "fixed"), **dict.fromkeys(learned, "learned")}
        kinds.update(dict.fromkeys(singles, "proxy"))
        summary = score_rules(t, every, list(top_ks), n_boot, confidence, seed)
        rows.append(
            summary.with_columns(
                pl.lit(task).alias("task"),
                pl.col("rule").replace_strict(kinds, return_dtype=pl.String).alias("kind"),
            )
        )
    table = pl.concat(rows, how="diagonal_relaxed")
    first = ["task", "rule", "kind"]
    return table.select(*first, pl.exclude(*first, "proxy")), weights
