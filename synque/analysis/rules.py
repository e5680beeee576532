"""Selection rules: how the per-proxy ranks of candidate sets become one recommendation.

`select` acts on one ranking, and the equal-weight mean rank it always used predicts task
performance worse than the best single proxy on the paper's tasks (docs/selection.md).
Rules are components (`configs/rule/*.yaml`, one `_target_` each) so that the rule is a
setting that can be compared, learned and scored like a proxy (`correlate` does).

A rule sees, for one group, the matrix of oriented ranks (rows: candidate sets, columns:
proxies, 1 = best, NaN where a proxy has no value) and returns one combined score on the
rank scale (lower = better). `rank_with_rule` turns that into the ranking `select` prints;
`rule_values` scores a rule per seed as a pseudo-proxy `rule:<name>` for `correlate`.
Each rule says in `needs` what it relies on beyond the task's own proxy runs.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import polars as pl

from synque import SynqueError
from synque.analysis.selection import finish_ranking, proxy_ranks

#: Prefix of a rule's pseudo-proxy name in correlate's tables.
RULE_PREFIX = "rule:"


def base_name(proxy: str) -> str:
    """`pad@efficientnet-lite0` -> `pad`: weights and single-proxy rules name the metric."""
    return proxy.split("@", 1)[0]


class SelectionRule(ABC):
    """Combines the oriented ranks of one group's candidate sets into one score."""

    #: What the rule needs beyond the task's proxy runs (shown in docs and errors).
    needs: ClassVar[tuple[str, ...]] = ()
    #: Set by `build_rules` from the config key; the class name stands in otherwise.
    name: str = ""

    def __init__(self, proxies: list[str] | None = None) -> None:
        self.only = [str(p) for p in proxies] if proxies else None
        self.name = self.name or type(self).__name__

    @property
    def keyed_by_name(self) -> bool:
        """Whether the rule reads proxies by name (a list, a weight, one proxy): `select`'s
        confidence then cannot resample proxies, which relabels them."""
        return self.only is not None

    def uses(self, available: list[str]) -> list[str]:
        """The proxies this rule combines, out of those logged (errors name the setting)."""
        if not self.only:
            return sorted(available)
        unknown = sorted(set(self.only) - set(available))
        if unknown:
            raise SynqueError(f"rule.{self.name}.proxies: no logged values for {unknown}")
        return sorted(self.only)

    def shown(self, available: list[str]) -> list[str]:
        """The proxies whose ranks the ranking table shows (by default those combined)."""
        return self.uses(available)

    def for_task(self, task: str | None) -> SelectionRule:
        """The rule to apply to `task` (learned rules swap in weights learned without it)."""
        return self

    @abstractmethod
    def combine(self, ranks: np.ndarray, names: list[str]) -> np.ndarray:
        """Combined score per row of `ranks` ([sets, proxies], NaN = missing), lower = better."""

    def combine_groups(self, blocks: list[np.ndarray], names: list[str]) -> list[np.ndarray]:
        """`combine` of many groups at once (select's confidence ranks thousands of
        resampled groups); a rule overrides it where stacking the groups is faster."""
        return [self.combine(block, names) for block in blocks]


class MeanRank(SelectionRule):
    """Equal-weight mean rank over the proxies (synque's historical `select`)."""

    def combine(self, ranks: np.ndarray, names: list[str]) -> np.ndarray:
        return _nan_weighted_mean(ranks, np.ones(ranks.shape[1]))


class MedianRank(SelectionRule):
    """Median rank over the proxies: one proxy gone wrong moves it by at most one place."""

    def combine(self, ranks: np.ndarray, names: list[str]) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a set no proxy ranked: NaN
            return np.nanmedian(ranks, axis=1)


class AgreementRank(SelectionRule):
    """Borda count weighted by agreement: each proxy's weight is its mean Kendall tau with
    the other proxies on this group (negative clipped to 0), so a proxy that contradicts
    the rest stops counting; with no agreement at all every proxy counts equally."""

    def combine(self, ranks: np.ndarray, names: list[str]) -> np.ndarray:
        return _nan_weighted_mean(ranks, agreement_weights(ranks))

    def combine_groups(self, blocks: list[np.ndarray], names: list[str]) -> list[np.ndarray]:
        weights = agreement_weights_many(blocks)
        return [_nan_weighted_mean(b, w) for b, w in zip(blocks, weights, strict=True)]


class SingleProxy(SelectionRule):
    """One named proxy's rank (`proxy: mdm`; a metric logged on several embedders or judges
    needs its full name, e.g. `pad@efficientnet-lite0`)."""

    keyed_by_name = True  # type: ignore[assignment]

    def __init__(self, proxy: str) -> None:
        super().__init__()
        self.proxy = str(proxy)

    def resolve(self, available: list[str]) -> str:
        """The logged proxy this rule means: its exact name, or the one `name@...` variant."""
        if self.proxy in available:
            return self.proxy
        variants = [p for p in available if base_name(p) == self.proxy]
        if len(variants) == 1:
            return variants[0]
        hint = f"several variants {variants}" if variants else f"logged: {sorted(available)}"
        raise SynqueError(f"rule.{self.name}.proxy: no single proxy '{self.proxy}' ({hint})")

    def uses(self, available: list[str]) -> list[str]:
        return [self.resolve(available)]

    def shown(self, available: list[str]) -> list[str]:
        self.resolve(available)
        return sorted(available)

    def combine(self, ranks: np.ndarray, names: list[str]) -> np.ndarray:
        return ranks[:, names.index(self.resolve(names))]


class WeightedRank(SelectionRule):
    """Weighted mean rank with fixed weights per metric, learned on other tasks.

    `weights` were learned on every task of the leave-one-task-out study; `held_out` maps a
    study task to the weights learned without it, which `for_task` swaps in so that a task
    is never ranked with weights that saw its own performance. A metric logged under several
    variants (`pad@a`, `pad@b`) shares its weight equally among them.
    """

    needs = ("task performance of other tasks (weights learned leave-one-task-out)",)

    keyed_by_name = True  # type: ignore[assignment]

    def __init__(
        self,
        weights: Mapping[str, float],
        held_out: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        super().__init__()
        self.weights = {str(k): float(v) for k, v in dict(weights).items()}
        self.held_out = {str(t): dict(w) for t, w in dict(held_out or {}).items()}
        bad = [k for k, v in self.weights.items() if v < 0 or not math.isfinite(v)]
        if bad or not self.weights:
            raise SynqueError(f"rule.{self.name}.weights: need non-negative numbers ({bad})")

    def for_task(self, task: str | None) -> SelectionRule:
        if task is None or task not in self.held_out:
            return self
        rule = WeightedRank(self.held_out[task])
        rule.name = self.name
        return rule

    def vector(self, names: list[str]) -> np.ndarray:
        """One weight per column of `names`, each metric's weight split among its variants."""
        counts: dict[str, int] = {}
        for name in names:
            counts[base_name(name)] = counts.get(base_name(name), 0) + 1
        out = []
        for name in names:
            weight = self.weights.get(name)
            if weight is None:
                weight = self.weights.get(base_name(name), 0.0) / counts[base_name(name)]
            out.append(weight)
        return np.asarray(out, dtype=float)

    def uses(self, available: list[str]) -> list[str]:
        names = sorted(available)
        if not (self.vector(names) > 0).any():
            raise SynqueError(
                f"rule.{self.name}.weights: no weighted proxy among the logged {names}"
            )
        return names

    def combine(self, ranks: np.ndarray, names: list[str]) -> np.ndarray:
        return _nan_weighted_mean(ranks, self.vector(names))


def _nan_weighted_mean(ranks: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row-wise weighted mean over the non-missing entries (NaN where none has weight)."""
    present = ~np.isnan(ranks)
    w = np.where(present, weights[None, :], 0.0)
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (np.nan_to_num(ranks) * w).sum(axis=1) / total, np.nan)


def _pairwise_taus(ranks: np.ndarray) -> np.ndarray:
    """Kendall tau-b of every pair of columns, each pair over the rows both have ([n, n];
    NaN where undefined); `ranks` [m, n], or [groups, m, n] for a stack of groups (rows
    that are NaN throughout, a shorter group's padding, count for nothing).

    With s_k[a, b] = sign(r_k[a] - r_k[b]) over the row pairs a < b (0 where row a or b
    lacks column k), the pair's concordance is sum(s_i * s_j) and its tau-b denominator
    sqrt(sum(s_i^2 over rows j has) * sum(s_j^2 over rows i has)): all pairs in two matrix
    products. Every sum is of integers (exact in float32 below 2^24 row pairs), so the
    result does not depend on the order of summation.
    """
    if ranks.ndim == 2:
        return _pairwise_taus(ranks[None])[0]
    m = ranks.shape[1]
    dtype = np.float32 if m * m < 2**24 else np.float64
    upper, lower = np.triu_indices(m, 1)
    filled = np.nan_to_num(ranks).astype(dtype)
    present = ~np.isnan(ranks)
    signs = np.sign(filled[:, upper] - filled[:, lower])  # [g, pairs, n]
    both = (present[:, upper] & present[:, lower]).astype(dtype)
    signs *= both
    concordance = np.matmul(signs.transpose(0, 2, 1), signs).astype(np.float64)
    # ties[i, j]: row pairs untied in column i, counted where column j has both rows
    np.abs(signs, out=signs)
    ties = np.matmul(signs.transpose(0, 2, 1), both).astype(np.float64)
    denom = np.sqrt(ties * ties.transpose(0, 2, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, concordance / np.where(denom > 0, denom, 1.0), np.nan)


#: Groups whose taus are computed in one stack (bounds the [groups, row pairs, n] sign arrays).
TAU_STACK = 32


def agreement_weights_many(blocks: list[np.ndarray]) -> list[np.ndarray]:
    """`agreement_weights` of many groups, stacked (NaN-padded to equal height) in chunks."""
    out: list[np.ndarray] = []
    for start in range(0, len(blocks), TAU_STACK):
        chunk = blocks[start : start + TAU_STACK]
        n = chunk[0].shape[1]
        if n < 2:
            out += [np.ones(n) for _ in chunk]
            continue
        stack = np.full((len(chunk), max(b.shape[0] for b in chunk), n), np.nan)
        for k, block in enumerate(chunk):
            stack[k, : block.shape[0]] = block
        with warnings.catch_warnings():  # a column with no overlap has no tau: NaN, weight 0
            warnings.simplefilter("ignore", RuntimeWarning)
            taus = _pairwise_taus(stack)
            for k, block in enumerate(chunk):
                out.append(_weights_from_taus(taus[k], block))
    return out


def _weights_from_taus(taus: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Each column's mean tau with the others (NaN for an empty column), clipped at 0;
    equal weights when every column disagrees."""
    taus = taus.copy()
    np.fill_diagonal(taus, np.nan)
    means = np.nanmean(taus, axis=1)
    means[np.isnan(ranks).all(axis=0)] = np.nan
    weights = np.clip(np.nan_to_num(means, nan=0.0), 0.0, None)
    return weights if weights.sum() > 0 else np.ones(ranks.shape[1])


def agreement_weights(ranks: np.ndarray) -> np.ndarray:
    """Each column's mean Kendall tau with the other columns, clipped at 0 (equal weights
    when every column disagrees or there is only one)."""
    return agreement_weights_many([ranks])[0]


# --- applying a rule ------------------------------------------------------------------------
def rank_with_rule(
    proxies: pl.DataFrame, rule: SelectionRule, task: str | None = None
) -> pl.DataFrame:
    """The ranking `select` prints, combined by `rule` (the columns of `rank_candidates`).

    `proxies` is the long table of `logged_proxies` (proxy, group, dataset, seed, value,
    higher_is_better); `task` lets a learned rule use weights learned without that task.
    Columns: group, position (1 = recommended; ties share the lowest), dataset,
    rank.combined (the rule's score on the rank scale), `rank.<proxy>`, `<proxy>`.
    """
    rule = rule.for_task(task)
    available = sorted(proxies["proxy"].unique().to_list())
    used = rule.uses(available)
    shown = sorted(set(rule.shown(available)) | set(used))
    table = proxy_ranks(proxies.filter(pl.col("proxy").is_in(shown)))
    combined = np.full(table.height, np.nan)
    matrix = table.select(f"rank.{p}" for p in used).to_numpy().astype(float)
    # row indices per group in one pass (select's confidence ranks thousands of groups)
    per_group = table.with_row_index("_row").group_by("group").agg("_row")["_row"].to_list()
    scores = rule.combine_groups([matrix[rows] for rows in per_group], used)
    for rows, score in zip(per_group, scores, strict=True):
        combined[rows] = score
    return finish_ranking(table, pl.Series(combined).fill_nan(None))


def rule_values(
    proxies: pl.DataFrame, rule: SelectionRule, task: str | None = None
) -> pl.DataFrame:
    """The rule scored like a proxy: per (group, dataset, seed) minus the rule's combined
    rank on that seed's proxy values alone, named `rule:<name>`, higher is better.

    Per seed, because each seed is one real sample: this is what a user with one sample
    gets, and it is how correlate aggregates proxies (mean over seeds, then groups).
    """
    parts = []
    for (seed,), part in proxies.group_by("seed", maintain_order=True):
        ranking = rank_with_rule(part, rule, task)
        parts.append(
            ranking.select(
                pl.lit(f"{RULE_PREFIX}{rule.name}").alias("proxy"),
                "group",
                "dataset",
                pl.lit(seed, pl.String).alias("seed"),
                (-pl.col("rank.combined")).alias("value"),
                pl.lit(True).alias("higher_is_better"),
            )
        )
    columns = ["proxy", "group", "dataset", "seed", "value", "higher_is_better"]
    if not parts:
        return pl.DataFrame(schema=dict.fromkeys(columns, pl.String)).cast(
            {"value": pl.Float64, "higher_is_better": pl.Boolean}
        )
    return pl.concat(parts).sort("group", "seed", "dataset")


def build_rules(nodes: Mapping[str, object] | None) -> dict[str, SelectionRule]:
    """Rules from the `rule` config group (one key per rule, each with `_target_`)."""
    from synque.components import build

    rules = {}
    for key, node in dict(nodes or {}).items():
        rule = build(node, f"rule.{key}")
        if not isinstance(rule, SelectionRule):
            raise SynqueError(f"rule.{key}._target_: {type(rule).__name__} is not a rule")
        rule.name = str(key)
        rules[str(key)] = rule
    return rules


def all_rule_values(
    proxies: pl.DataFrame, rules: Mapping[str, SelectionRule], task: str | None = None
) -> tuple[pl.DataFrame, dict[str, str]]:
    """(pseudo-proxy rows of every rule that applies, {rule: why it was skipped}).

    A rule that cannot apply to this task (its proxy or its weighted proxies were not
    logged) is skipped with its one-line reason instead of failing the whole report.
    """
    parts, skipped = [], {}
    for name, rule in rules.items():
        rule.name = name  # the key is the rule's name in every table
        try:
            parts.append(rule_values(proxies, rule, task))
        except SynqueError as exc:
            skipped[name] = str(exc)
    if not parts:
        return rule_values(proxies.clear(), MeanRank()), skipped
    return pl.concat(parts), skipped


def stage_rule_nodes(stage_cfg: Mapping[str, object]) -> dict[str, object]:
    """The rule nodes of a stage config: `stage.rules` as Hydra composed it, or, when the
    stage file was loaded without composition (a pipeline step), the `/rule@rules` entry
    of its defaults list read from `configs/rule/`."""
    from omegaconf import OmegaConf

    from synque.config import project_root

    nodes = stage_cfg.get("rules")
    if nodes is not None:
        return dict(nodes)  # type: ignore[call-overload]
    out: dict[str, object] = {}
    for entry in stage_cfg.get("defaults") or []:  # type: ignore[union-attr]
        if isinstance(entry, Mapping) and "/rule@rules" in entry:
            for name in entry["/rule@rules"] or []:
                path = project_root() / "configs" / "rule" / f"{name}.yaml"
                if not path.is_file():
                    raise SynqueError(f"stage.rules: no rule config {path}")
                out.update(dict(OmegaConf.load(path)))
    return out


def stage_rule(stage_cfg: Mapping[str, object], name: str) -> SelectionRule:
    """The rule `name` of a stage's rules (what `select` ranks with: `stage.rule`)."""
    nodes = stage_rule_nodes(stage_cfg)
    if name not in nodes:
        raise SynqueError(f"stage.rule: unknown rule '{name}' (have {sorted(nodes)})")
    return build_rules({name: nodes[name]})[name]
