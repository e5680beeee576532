"""The `lens` stage: the LENS score of every candidate set with any LLM judge.

Per candidate set: its rubric (reused from a `rubric` run, compiled, or released with
`llm=replay`), four judgments per synthetic and real example (or a seeded subsample), the
raw and debiased scores, and the judgments table as `judgments.parquet` (image tasks: with
the sha256 of each judged image, `image_sha256`), plus a sample of it as the MLflow table
`judgments_sample.json` (at most `SAMPLE_ROWS` rows, readable in the UI and with
`mlflow.load_table` across runs).
"""

from __future__ import annotations

import mlflow
import numpy as np
import polars as pl
from omegaconf import DictConfig

from synque.data.task import Task
from synque.lens import Rubric, judge_examples, judgments_from_released, lens_scores
from synque.llm import LLM
from synque.stages.rubric import llm_examples, rubric_for, run_llm_stage
from synque.tracking import TAG, StageRun, log_inputs, log_llm_usage, log_table
from synque.tracking.inputs import log_mlflow_table

LENS_PROXIES = ("lens", "lens_raw", "lens_expected", "lens_raw_expected")
#: Rows of `judgments_sample.json` at most (the whole table stays in `judgments.parquet`).
SAMPLE_ROWS = 200


def judgments_sample(judgments: pl.DataFrame, limit: int = SAMPLE_ROWS) -> pl.DataFrame:
    """At most `limit` rows, as many synthetic as real where both sets have enough (a fixed
    seed, so a rerun logs the same rows), in the table's order."""
    if len(judgments) <= limit:
        return judgments
    sets = judgments["set"]
    n_real = int((sets == "real").sum())
    take_real = min(n_real, max(limit // 2, limit - (len(judgments) - n_real)))
    rng = np.random.default_rng(0)
    rows = []
    for name, count in (("synthetic", limit - take_real), ("real", take_real)):
        where = np.flatnonzero((sets == name).to_numpy())
        rows.append(rng.choice(where, size=count, replace=False))
    return judgments[np.sort(np.concatenate(rows))]


def subsample(frame: pl.DataFrame, limit: int | None, seed: int) -> tuple[pl.DataFrame, np.ndarray]:
    """At most `limit` rows (seeded, order kept) and their original positions."""
    idx = np.arange(len(frame))
    if limit and limit < len(frame):
        idx = np.sort(np.random.default_rng(seed).choice(len(frame), size=limit, replace=False))
    return frame[idx], idx


def _judge(
    cfg: DictConfig,
    llm: LLM,
    rubric: Rubric,
    task: Task,
    sets: tuple[str, str],
    synth: pl.DataFrame,
    real: pl.DataFrame,
) -> pl.DataFrame:
    """Judgments of a seeded subsample, indexed by the examples' positions in their sets."""
    scfg = cfg.stage
    synth_sub, synth_idx = subsample(synth, scfg.max_synthetic, int(scfg.subsample_seed))
    real_sub, real_idx = subsample(real, scfg.max_real, int(scfg.subsample_seed))
    synth_shown = llm_examples(task, synth_sub, sets[0], cfg)
    real_shown = llm_examples(task, real_sub, sets[1], cfg)
    before = llm.metrics()
    judgments = judge_examples(
        llm,
        rubric,
        cfg.prompts,
        synth_shown,
        real_shown,
        mode=str(scfg.mode),
        max_tokens=int(scfg.max_tokens),
        progress=bool(cfg.progress),
    )
    log_llm_usage(llm, before)
    # judge_examples indexes each set from 0 in the order given: map back to the full sets
    judgments = judgments.with_columns(index=pl.Series(np.concatenate([synth_idx, real_idx])))
    if task.modality == "image":
        digests = [part["sha256"] for part in [*synth_shown, *real_shown]]  # type: ignore[index]
        position = judgments.columns.index("index") + 1
        judgments = judgments.insert_column(position, pl.Series("image_sha256", digests))
    return judgments


def _released(cfg: DictConfig, task: Task, group: str, name: str) -> pl.DataFrame:
    """The paper's judgments, as released (the judged real set can differ from the seed's
    sample file); debug slices cut them like the data."""
    synth, real = task.released_judgments(group, name, int(cfg.seed), str(cfg.llm.judge))
    return judgments_from_released(
        synth[: task.max_examples or None], real[: task.max_real or None]
    )


def _lens_one(
    job: StageRun, cfg: DictConfig, llm: LLM | None, task: Task, group: str, name: str
) -> None:
    seed = int(cfg.seed)
    synth = task.load_candidate(group, name)
    real = task.real_sample(group, seed)
    rubric, rubric_run = rubric_for(job, cfg, llm, task, group, name, (synth, real))
    with job.child(name, group, tags={"llm": str(cfg.llm.name), "rubric_run": rubric_run}):
        log_inputs(task, group, name, synth, real, seed)
        judgments = (
            _released(cfg, task, group, name)
            if llm is None
            else _judge(cfg, llm, rubric, task, (name, f"real sample of {group}"), synth, real)
        )
        scores = lens_scores(judgments)
        proxies = [p for p in LENS_PROXIES if p in scores]
        mlflow.set_tags(
            {
                f"{TAG}proxy": ",".join(proxies),
                **{f"{TAG}higher_is_better.{p}": "True" for p in proxies},
                **{f"{TAG}variant.{p}": "default" for p in proxies},
            }
        )
        mlflow.log_metrics(
            {
                **scores,
                "n_judged_synthetic": int((judgments["set"] == "synthetic").sum()),
                "n_judged_real": int((judgments["set"] == "real").sum()),
                "invalid_answers": int(judgments["n_invalid"].sum()),
            }
        )
        log_table(judgments, "judgments.parquet")
        log_mlflow_table(judgments_sample(judgments), "judgments_sample.json")
        mlflow.log_text(rubric.to_json(), "rubric.json")


def run_lens(cfg: DictConfig) -> None:
    """LENS of every candidate set: rubric (reused, compiled or released), then judgments."""
    run_llm_stage(cfg, "lens", _lens_one)
