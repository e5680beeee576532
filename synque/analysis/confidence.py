"""How sure is `select`? Proxy agreement and the stability of the recommended set.

A ranking is only worth acting on when the proxies that make it agree with each other and
when the pick survives the noise the ranking was built from. Per group, without any
performance labels:

- **agreement**: Kendall's W of the proxies (raters) over the candidate sets (items), from
  each proxy's mean rank over seeds; 0 = no agreement beyond chance, 1 = identical rankings.
  Computed from scipy's tie-corrected Friedman statistic (W = chi2 / (m (n - 1))), whose
  p-value says whether the agreement could be chance.
- **stability**: the ranking is recomputed on resamples and we count how often the set
  recommended on the full data is still first (`top1`) or among the first three (`top3`).
  Sources of resampling, each alone and all together (`all`, what the verdict uses):
  `seeds` (the real samples, drawn with replacement), `proxies` (the proxies, drawn with
  replacement: is the pick carried by one proxy?), `noise` (each value moved by a normal
  draw with the proxy's own noise, `<proxy>.std / sqrt(noise_seeds)`, where it was logged).
  Resampling the real sample itself needs the embeddings, which `select` never loads; the
  seeds are independent real samples, so `seeds` stands in for it.

Verdict per group (thresholds in `Thresholds`, documented there):
"proxies disagree: measure before you choose" when W < `disagree_w` or the pick leaves the
top 3 in more than half of the resamples; "confident" when W >= `confident_w` (or a single
proxy) and the pick stays first in at least `confident_top1` of the resamples; else "weak".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

CONFIDENT = "confident"
WEAK = "weak"
DISAGREE = "proxies disagree: measure before you choose"
SOURCES = ("seeds", "proxies", "noise", "all")

#: A ranking rule: the long proxy table in (proxy, group, dataset, seed, value,
#: higher_is_better, noise), `rank_candidates`' columns out (group, position, dataset, ...).
#: The resamples call it unchanged, so any rule gets the same confidence.
RankFn = Callable[[pl.DataFrame], pl.DataFrame]


@dataclass(frozen=True)
class Thresholds:
    """Where the verdict changes; defaults chosen to be plain to explain, not fitted.

    - ``confident_w`` 0.5: half-way between chance and identical rankings, the usual reading
      of "moderate" agreement for Kendall's W.
    - ``disagree_w`` 0.3: below it the proxies order the sets barely better than chance.
    - ``confident_top1`` 0.8: the pick stays first in four resamples out of five.
    - ``disagree_top3`` 0.5: the pick leaves the top 3 more often than not.
    """

    confident_w: float = 0.5
    disagree_w: float = 0.3
    confident_top1: float = 0.8
    disagree_top3: float = 0.5


# --- agreement ----------------------------------------------------------------------------------


def kendalls_w(scores: np.ndarray) -> tuple[float, float]:
    """(Kendall's W, p-value) of `scores` [raters, items]: each rater's row is ranked (lower
    score = better rank, ties averaged) and W is tie-corrected. NaN for fewer than 2 raters
    or 3 items (scipy's Friedman test needs 3) or when every rater ties every item."""
    from scipy.stats import friedmanchisquare

    scores = np.asarray(scores, dtype=np.float64)
    m, n = scores.shape if scores.ndim == 2 else (0, 0)
    if m < 2 or n < 3:
        return math.nan, math.nan
    if all(np.all(row == row[0]) for row in scores):
        return math.nan, math.nan
    # friedmanchisquare: one sample per item (treatment), measured by every rater (block)
    stat, p = friedmanchisquare(*scores.T)
    return float(stat) / (m * (n - 1)), float(p)


def agreement(ranking: pl.DataFrame) -> pl.DataFrame:
    """Per group: n_sets, n_proxies, kendall_w, kendall_p from the `rank.<proxy>` columns of a
    ranking (each proxy's mean rank over seeds); sets some proxy did not score are left out."""
    proxies = [c for c in ranking.columns if c.startswith("rank.") and c != "rank.combined"]
    rows = []
    for (group,), part in ranking.group_by("group", maintain_order=True):
        ranks = part.select(proxies).drop_nulls().fill_nan(None).drop_nulls()
        w, p = kendalls_w(ranks.to_numpy().T) if proxies else (math.nan, math.nan)
        rows.append(
            {
                "group": group,
                "n_sets": part.height,
                "n_proxies": len(proxies),
                "kendall_w": w,
                "kendall_p": p,
            }
        )
    schema = {
        "group": pl.String,
        "n_sets": pl.Int64,
        "n_proxies": pl.Int64,
        "kendall_w": pl.Float64,
        "kendall_p": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)


# --- stability ----------------------------------------------------------------------------------


KEYS = ["group", "dataset"]


def _resample_labels(
    frame: pl.DataFrame, column: str, rng: np.random.Generator, resamples: int
) -> pl.DataFrame:
    """`frame` with a `_b` column (resample number): in each resample the values of `column`
    are drawn with replacement and each draw is relabelled by its slot (`#i`): one drawn k
    times appears k times, so a rule sees k distinct seeds (or proxies) and weighs that value
    k times. Slot labels rather than `value#i` keep a resample's proxies to as many columns
    as there are proxies (the stacked ranking would otherwise be n^2 columns wide)."""
    labels = frame[column].unique(maintain_order=True).to_list()
    drawn = rng.choice(len(labels), size=(resamples, len(labels)), replace=True)
    b, i = np.indices(drawn.shape)
    mapping = pl.DataFrame(
        {
            "_b": b.ravel(),
            column: [labels[d] for d in drawn.ravel()],
            "_new": [f"#{k}" for k in i.ravel()],
        },
        schema={"_b": pl.Int64, column: frame.schema[column], "_new": pl.String},
    )
    on = ["_b", column] if "_b" in frame.columns else [column]
    out = frame.join(mapping, on=on, how="inner")
    return out.drop(column).rename({"_new": column})


def _jitter(frame: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """Each value moved by a normal draw of its own noise (rows without noise stay)."""
    if "noise" not in frame.columns:
        return frame
    noise = frame["noise"].fill_nan(None).fill_null(0.0).to_numpy()
    draw = rng.standard_normal(frame.height) * noise
    return frame.with_columns(pl.col("value") + pl.Series(draw))


def resample(
    frame: pl.DataFrame, source: str, rng: np.random.Generator, resamples: int
) -> pl.DataFrame:
    """`resamples` resamples of the long proxy table for `source` (see the module docstring),
    stacked, with the resample number in the column `_b`."""
    if source in ("seeds", "all"):
        frame = _resample_labels(frame, "seed", rng, resamples)
    if source in ("proxies", "all"):
        frame = _resample_labels(frame, "proxy", rng, resamples)
    if "_b" not in frame.columns:
        frame = frame.join(pl.DataFrame({"_b": np.arange(resamples)}), how="cross")
    if source in ("noise", "all"):
        frame = _jitter(frame, rng)
    return frame


def available_sources(proxies: pl.DataFrame, vary_proxies: bool = True) -> list[str]:
    """The sources that can vary anything: two seeds, two proxies, some logged noise.

    `vary_proxies=False` leaves out the proxies source, for a rule that reads proxies by name
    (a resample relabels them `name#k`)."""
    sources = []
    if proxies["seed"].n_unique() > 1:
        sources.append("seeds")
    if vary_proxies and proxies["proxy"].n_unique() > 1:
        sources.append("proxies")
    if "noise" in proxies.columns and (proxies["noise"].fill_nan(None).drop_nulls() > 0).any():
        sources.append("noise")
    if sources:
        sources.append("all")
    return sources


def stability(
    proxies: pl.DataFrame,
    rank_fn: RankFn,
    recommended: dict[str, str],
    *,
    resamples: int = 200,
    seed: int = 0,
    vary_proxies: bool = True,
) -> pl.DataFrame:
    """Per group and source: the share of resamples in which `recommended[group]` is at
    position 1 (`top1`) and at position <= 3 (`top3`). Columns: group, source, top1, top3,
    resamples. A source that cannot vary anything (one seed, one proxy, no noise) is absent.

    The ranking rule is called once per source on all resamples stacked (groups and sets
    as integer codes, group `code * resamples + b`), so it must rank each group on its own,
    as every selection rule does, and treat both as plain keys.
    """
    rng = np.random.default_rng(seed)
    # groups and sets as integer codes while stacked: the rule ranks `groups x resamples`
    # groups of millions of rows, and integer keys group, sort and join faster than labels
    codes = {key: {v: i for i, v in enumerate(sorted(proxies[key].unique()))} for key in KEYS}
    needed = ["proxy", *KEYS, "seed", "value", "higher_is_better", "noise"]
    coded = proxies.select(c for c in needed if c in proxies.columns).with_columns(
        pl.col(key).replace_strict(codes[key], return_dtype=pl.Int64) for key in KEYS
    )
    picks = pl.DataFrame(
        {
            "group": list(recommended),
            "_g": [codes["group"][g] for g in recommended],
            "_dataset": [codes["dataset"].get(d) for d in recommended.values()],
        },
        schema={"group": pl.String, "_g": pl.Int64, "_dataset": pl.Int64},
    )
    parts = []
    for source in available_sources(proxies, vary_proxies):
        stacked = resample(coded, source, rng, resamples)
        stacked = stacked.with_columns(pl.col("group") * resamples + pl.col("_b")).drop("_b")
        ranking = rank_fn(stacked).select(
            (pl.col("group") // resamples).alias("_g"),
            pl.col("dataset").alias("_dataset"),
            "position",
        )
        found = picks.join(ranking, on=["_g", "_dataset"], how="left")
        parts.append(
            found.group_by("group", maintain_order=True).agg(
                pl.lit(source).alias("source"),
                ((pl.col("position") == 1).sum() / resamples).alias("top1"),
                ((pl.col("position") <= 3).sum() / resamples).alias("top3"),
                pl.lit(resamples).cast(pl.Int64).alias("resamples"),
            )
        )
    schema = {
        "group": pl.String,
        "source": pl.String,
        "top1": pl.Float64,
        "top3": pl.Float64,
        "resamples": pl.Int64,
    }
    if not parts:
        return pl.DataFrame(schema=schema)
    return pl.concat(parts).select(pl.col(c).cast(t) for c, t in schema.items())


# --- verdict ------------------------------------------------------------------------------------


def verdict(w: float, n_proxies: int, top1: float, top3: float, limits: Thresholds) -> str:
    """The plain verdict of one group (see the module docstring for the rule)."""
    has_w = not math.isnan(w)
    if (has_w and w < limits.disagree_w) or (not math.isnan(top3) and top3 < limits.disagree_top3):
        return DISAGREE
    agrees = has_w and w >= limits.confident_w or n_proxies < 2
    if agrees and not math.isnan(top1) and top1 >= limits.confident_top1:
        return CONFIDENT
    return WEAK


def reason(w: float, n_proxies: int, top1: float, top3: float, limits: Thresholds) -> str:
    """Why the verdict is what it is, in a few words a user can act on."""
    has_w = not math.isnan(w)
    if has_w and w < limits.disagree_w:
        return "the proxies order the sets differently"
    if not math.isnan(top3) and top3 < limits.disagree_top3:
        return "the pick often leaves the top 3"
    if math.isnan(top1):
        return "nothing to resample (one seed, one proxy, no logged noise)"
    agrees = has_w and w >= limits.confident_w or n_proxies < 2
    if agrees and top1 >= limits.confident_top1:
        return "the proxies agree and the pick holds"
    if agrees:
        return "the proxies agree, but first place is close: compare the top 3"
    return "the proxies agree only moderately"


def overall(table: pl.DataFrame) -> str:
    """The task's verdict over its groups: confident when every group is, "proxies disagree"
    when at least half of the groups disagree (most of the ranking is then a coin toss),
    else weak. Why not an average: a user acts per group, so one line must not hide that
    most groups are untrustworthy, nor call a task confident when one group is not."""
    verdicts = table["verdict"].to_list()
    if verdicts and all(v == CONFIDENT for v in verdicts):
        return CONFIDENT
    if verdicts and 2 * verdicts.count(DISAGREE) >= len(verdicts):
        return DISAGREE
    return WEAK


def summary_line(table: pl.DataFrame) -> str:
    """'3 groups: 1 confident, 1 weak, 1 proxies disagree; median W 0.27', or '' for one group."""
    if table.height < 2:
        return ""
    counts = [
        f"{n} {'disagree' if v == DISAGREE else v}"
        for v in (CONFIDENT, WEAK, DISAGREE)
        if (n := table["verdict"].to_list().count(v))
    ]
    w = table["kendall_w"].fill_nan(None).median()
    return f"{table.height} groups: {', '.join(counts)}; median W {_num(w)}"


def confidence(
    proxies: pl.DataFrame,
    ranking: pl.DataFrame,
    rank_fn: RankFn,
    *,
    resamples: int = 200,
    seed: int = 0,
    limits: Thresholds | None = None,
    vary_proxies: bool = True,
) -> pl.DataFrame:
    """One row per group: group, recommended, n_sets, n_proxies, n_seeds, kendall_w, kendall_p,
    `top1.<source>` / `top3.<source>` per source (null where it cannot vary), top1, top3 (the
    `all` source), verdict, reason (why, in words).

    `ranking` is `rank_fn(proxies)`, passed in so the recommendation is the one select shows.
    """
    limits = limits or Thresholds()
    best = ranking.filter(pl.col("position") == 1).unique(
        "group", keep="first", maintain_order=True
    )
    recommended = dict(zip(best["group"], best["dataset"], strict=True))
    table = agreement(ranking).with_columns(
        pl.col("group").replace_strict(recommended, default=None).alias("recommended"),
        pl.lit(proxies["seed"].n_unique()).cast(pl.Int64).alias("n_seeds"),
    )
    shares = stability(
        proxies, rank_fn, recommended, resamples=resamples, seed=seed, vary_proxies=vary_proxies
    )
    for source in SOURCES:
        part = shares.filter(source=source).select(
            "group", pl.col("top1").alias(f"top1.{source}"), pl.col("top3").alias(f"top3.{source}")
        )
        table = table.join(part, on="group", how="left")
    rows = []
    for row in table.iter_rows(named=True):
        top1, top3 = _headline(row)
        row |= {"top1": top1, "top3": top3}
        w = row["kendall_w"] if row["kendall_w"] is not None else math.nan
        row["verdict"] = verdict(w, row["n_proxies"], top1, top3, limits)
        row["reason"] = reason(w, row["n_proxies"], top1, top3, limits)
        rows.append(row)
    columns = ["group", "recommended", "n_sets", "n_proxies", "n_seeds", "kendall_w", "kendall_p"]
    columns += [f"top{k}.{s}" for s in SOURCES for k in (1, 3)] + ["top1", "top3"]
    columns += ["verdict", "reason"]
    return pl.DataFrame(rows, infer_schema_length=None).select(columns)


def _headline(row: dict) -> tuple[float, float]:
    """The joint (`all`) shares; with nothing to resample (one seed, one proxy, no noise) the
    pick is stable by construction only, so the shares are NaN rather than a reassuring 1."""
    top1, top3 = row.get("top1.all"), row.get("top3.all")
    if top1 is None:
        return math.nan, math.nan
    return float(top1), float(top3)


# --- what the user sees -------------------------------------------------------------------------

#: The terminal width select's confidence block fits in.
WIDTH = 80


def _pct(value: object) -> str:
    return "-" if value is None or math.isnan(float(value)) else f"{100 * float(value):.0f}%"


def _num(value: object, spec: str = ".2f") -> str:
    return "-" if value is None or math.isnan(float(value)) else format(float(value), spec)


def _p(value: object) -> str:
    """A p-value with three decimals, or '<0.001' (never a misleading 0.000)."""
    if value is not None and not math.isnan(float(value)) and float(value) < 0.001:
        return "<0.001"
    return _num(value, ".3f")


def _sources(row: dict) -> str:
    """'seeds 80/100, proxies 60/95, noise 98/100' (percent first / in top 3), or ''."""
    parts = [
        f"{s} {_pct(row[f'top1.{s}'])[:-1]}/{_pct(row[f'top3.{s}'])}"
        for s in SOURCES[:-1]
        if row.get(f"top1.{s}") is not None
    ]
    return ", ".join(parts)


def _rule(limits: Thresholds) -> str:
    """The verdict rule in one short line (the thresholds actually used)."""
    return (
        f"confident: W>={limits.confident_w:g} and 1st in >={_pct(limits.confident_top1)}; "
        f"disagree: W<{limits.disagree_w:g} or top 3 in <{_pct(limits.disagree_top3)}; "
        "else weak"
    )


def confidence_lines(
    table: pl.DataFrame, resamples: int, limits: Thresholds | None = None
) -> list[str]:
    """Plain lines of at most 80 characters (a long set name excepted): per group the verdict,
    the pick, the agreement and how often the pick survives resampling."""
    lines = [f"How sure is the pick? (Kendall's W of the proxies; {resamples} resamples)"]
    for row in table.iter_rows(named=True):
        where = "Verdict: " if row["group"] == "all" else f"{row['group']}: "
        lines.append(f"{where}{row['verdict']}")
        lines.append(f"  {row['reason']}")
        lines.append(f"  pick {row['recommended']}")
        p = _p(row["kendall_p"])
        lines.append(
            f"  W={_num(row['kendall_w'])} (p{'' if p.startswith('<') else '='}{p}, "
            f"{row['n_proxies']} proxies, {row['n_sets']} sets); stays 1st "
            f"{_pct(row['top1'])}, top 3 {_pct(row['top3'])}"
        )
        if by_source := _sources(row):
            lines.append(f"  1st/top 3 by source: {by_source}")
    if summary := summary_line(table):
        lines += [f"Overall: {overall(table)}", f"  {summary}"]
    lines.append(_rule(limits or Thresholds()))
    return lines


def print_confidence(table: pl.DataFrame, resamples: int, limits: Thresholds | None = None) -> None:
    """The confidence block under select's ranking, verdicts highlighted."""
    from rich.console import Console
    from rich.markup import escape

    colour = {CONFIDENT: "green", WEAK: "yellow", DISAGREE: "red"}
    console = Console(width=WIDTH)
    *lines, legend = confidence_lines(table, resamples, limits)
    for line in lines:
        text = escape(line)
        for verdict_text, style in colour.items():
            if line.endswith(verdict_text) or line.startswith(f"Overall: {verdict_text}"):
                text = text.replace(verdict_text, f"[bold {style}]{verdict_text}[/]", 1)
        console.print(text, soft_wrap=False)
    console.print(escape(legend), soft_wrap=False)


def confidence_markdown(
    table: pl.DataFrame, resamples: int, limits: Thresholds | None = None
) -> str:
    """The confidence section of select's Markdown note: one table row per group."""
    header = "| group | verdict | pick | W (p) | 1st | top 3 |"
    lines = [
        f"#### How sure is the pick? ({resamples} resamples)",
        "",
        header,
        "| :-- | :-- | :-- | --: | --: | --: |",
    ]
    for row in table.iter_rows(named=True):
        w = f"{_num(row['kendall_w'])} ({_p(row['kendall_p'])})"
        cells = [
            str(row["group"]),
            f"**{row['verdict']}**: {row['reason']}",
            f"`{row['recommended']}`",
            w,
            _pct(row["top1"]),
            _pct(row["top3"]),
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if summary := summary_line(table):
        lines += ["", f"**Overall: {overall(table)}** ({summary})"]
    lines += [
        "",
        "W: Kendall's W of the proxies' rankings (p: Friedman test). 1st / top 3: share of "
        "resamples (seeds, proxies and logged proxy noise resampled together) in which the "
        "pick stays first / in the first three (each source alone: `confidence.csv`). "
        f"{_rule(limits or Thresholds())}.",
    ]
    return "\n".join(lines)


def confidence_logs(table: pl.DataFrame) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, tags) for the select run: `confidence.<stat>.<group>` for W, its p-value and
    every share, `confidence.groups_<verdict>` (how many groups got it), the tags
    `synque.verdict.<group>` and `synque.verdict` (the task's, `overall`). NaN values are left
    out: MLflow would store them, but a missing metric reads plainer as "not measured"."""
    stats = ["kendall_w", "kendall_p", "top1", "top3"]
    stats += [f"top{k}.{s}" for s in SOURCES[:-1] for k in (1, 3)]
    metrics, tags = {}, {}
    for row in table.iter_rows(named=True):
        group = row["group"]
        for stat in stats:
            value = row.get(stat)
            if value is not None and not math.isnan(float(value)):
                metrics[f"confidence.{stat.replace('.', '_')}.{group}"] = float(value)
        tags[f"synque.verdict.{group}"] = row["verdict"]
    tags["synque.verdict"] = overall(table)
    for name in (CONFIDENT, WEAK, DISAGREE):
        key = "disagree" if name == DISAGREE else name
        metrics[f"confidence.groups_{key}"] = float(table["verdict"].to_list().count(name))
    return metrics, tags
