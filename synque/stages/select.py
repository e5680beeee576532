"""The `select` stage: which candidate set should I train on? No performance labels needed.

Reads proxy runs back from MLflow, ranks candidate sets with the selection rule `stage.rule`
(`synque.analysis.rules`; per proxy, oriented by `higher_is_better`, then combined; the
default, agreement-weighted rank, is the one docs/selection.md supports), logs `ranking.csv`
(and the MLflow table `ranking.json`), the pick per group as `synque.best.<group>` and the
recommendation as Markdown in the run's and the experiment's description, and prints the
ranking. Like `correlate`, the run aggregates every seed (`synque.seed=all`, `synque.seeds`).

A recommendation is acted on, so select also says how sure it is
(`synque.analysis.confidence`): per group the proxies' agreement (Kendall's W) and how often
the pick survives resampling seeds, proxies and the proxies' own logged noise, with a plain
verdict, printed under the ranking, logged as `confidence.csv` / `confidence.json`, metrics
`confidence.<stat>.<group>`, tags `synque.verdict.<group>`, and appended to the note.
"""

from __future__ import annotations

import math

import mlflow
import polars as pl
from omegaconf import DictConfig

from synque import SynqueError
from synque.analysis import best_per_group, print_ranking
from synque.analysis.confidence import (
    Thresholds,
    confidence,
    confidence_logs,
    confidence_markdown,
    print_confidence,
)
from synque.analysis.report import ranking_markdown, seed_list
from synque.analysis.rules import rank_with_rule, stage_rule
from synque.stages.common import load_task
from synque.tracking import TAG, StageRun, log_table
from synque.tracking.inputs import log_mlflow_table
from synque.tracking.notes import write_notes
from synque.tracking.read import NOISE_SUFFIX, RunRecord, logged_proxies, stage_records

#: MLflow keeps at most 8000 characters in a run's description tag.
RUN_NOTE_LIMIT = 8000


def proxy_noise(records: list[RunRecord]) -> pl.DataFrame:
    """run_id, metric, noise: the noise of each logged proxy value that has one.

    repr logs `<proxy>.std` (spread of single computations over `noise_seeds` noise seeds)
    and the tag `synque.noise_seeds.<proxy>`; the logged value is their mean, so its own
    noise is std / sqrt(noise_seeds), which is what a resample should move it by.
    """
    rows = []
    for run in records:
        for name, std in run.metrics.items():
            if not name.endswith(NOISE_SUFFIX):
                continue
            metric = name[: -len(NOISE_SUFFIX)]
            repeats = int(run.tags.get(f"{TAG}noise_seeds.{metric}", "1"))
            rows.append({"run_id": run.run_id, "metric": metric, "noise": std / math.sqrt(repeats)})
    schema = {"run_id": pl.String, "metric": pl.String, "noise": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def _thresholds(scfg: DictConfig) -> Thresholds:
    """The verdict thresholds of `stage.confidence.thresholds` (defaults where absent)."""
    given = dict((scfg.get("confidence") or {}).get("thresholds") or {})
    unknown = sorted(set(given) - set(Thresholds.__dataclass_fields__))
    if unknown:
        raise SynqueError(
            f"stage.confidence.thresholds: unknown key(s) {unknown}; "
            f"known: {sorted(Thresholds.__dataclass_fields__)}"
        )
    return Thresholds(**{k: float(v) for k, v in given.items()})


def _join_notes(ranking_note: str, confidence_note: str) -> str:
    """Ranking note then confidence section, within MLflow's limit for a run tag: the
    confidence section is short and always kept whole; the ranking note loses whole lines
    from its end (its table's last rows) if needed, and says so."""
    cut = "... cut to fit MLflow's limit; the whole ranking is in ranking.csv"
    lines = ranking_note.splitlines()
    text = ranking_note
    while lines and len(text) + len(confidence_note) + 2 > RUN_NOTE_LIMIT:
        lines.pop()
        text = "\n".join([*lines, cut])
    return f"{text}\n\n{confidence_note}"


def run_select(cfg: DictConfig) -> pl.DataFrame:
    """Rank the task's candidate sets by the logged proxies, say how sure, log and print."""
    scfg = cfg.stage
    task = load_task(cfg)
    job = StageRun(cfg, "select", task.name, aggregate=True)
    # one read of the stages' runs: the proxy values and their noise
    records = stage_records(job.client, task.name, list(scfg.proxy_stages))
    proxies = logged_proxies(job.client, task.name, scfg, "select", records)
    chosen = list(scfg.proxies) if scfg.proxies else None
    if chosen and (unknown := sorted(set(chosen) - set(proxies["proxy"]))):
        raise SynqueError(f"stage.proxies: no logged values for proxies {unknown}")
    used = proxies.filter(pl.col("proxy").is_in(chosen)) if chosen else proxies
    rule_name = str(scfg.get("rule") or "mean_rank")
    rule = stage_rule(scfg, rule_name)

    def rank(frame: pl.DataFrame) -> pl.DataFrame:
        return rank_with_rule(frame, rule, task.name)

    ranking = rank(used)
    seeds = used["seed"]
    noise = proxy_noise(records)
    used = used.join(noise, on=["run_id", "metric"], how="left")
    settings = scfg.get("confidence") or {}
    resamples = int(settings.get("resamples", 200))
    limits = _thresholds(scfg)
    sure = confidence(
        used,
        ranking,
        rank,
        resamples=resamples,
        seed=int(settings.get("seed", 0)),
        limits=limits,
        vary_proxies=not rule.for_task(task.name).keyed_by_name,
    )
    note = _join_notes(
        ranking_markdown(ranking, task=task.name, seeds=seeds, rule=rule_name),
        confidence_markdown(sure, resamples, limits),
    )
    metrics, tags = confidence_logs(sure)
    with job:
        mlflow.set_tags({f"{TAG}seeds": seed_list(seeds), f"{TAG}rule": rule_name})
        log_table(ranking, "ranking.csv")
        log_mlflow_table(ranking, "ranking.json")
        log_table(sure, "confidence.csv")
        log_mlflow_table(sure, "confidence.json")
        mlflow.set_tags({f"{TAG}best.{g}": d for g, d in best_per_group(ranking).items()})
        mlflow.set_tags(tags)
        mlflow.log_metrics(metrics)
        write_notes(job.client, job.experiment_id, "select", note)
    print_ranking(ranking, task.name, int(scfg.top), rule=rule_name)
    print_confidence(sure, resamples, limits)
    return ranking
