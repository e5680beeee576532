"""The `rubric` and `lens` stages: rubric compilation and judging with any LLM backend.

Rubric runs are found again by `synque.rubric_key` (what compiling depends on), so a lens
job reuses a rubric another job compiled; `llm=replay` imports the paper's released rubrics
and judgments instead of calling a model.
"""

from __future__ import annotations

import logging
from typing import Any

import mlflow
import numpy as np
import polars as pl
from omegaconf import DictConfig

from synque.config import config_hash, to_container
from synque.data.task import Task
from synque.lens import (
    RUBRIC_FIELDS,
    Prompts,
    Rubric,
    compile_rubric,
    judge_examples,
    judgments_from_released,
    lens_scores,
)
from synque.stages.common import load_task, open_llm, uses_replay
from synque.tracking import StageRun, log_inputs, log_llm_usage, log_table

log = logging.getLogger(__name__)

LENS_PROXIES = ("lens", "lens_raw", "lens_expected", "lens_raw_expected")


def rubric_key(cfg: DictConfig, group: str, dataset: str) -> str:
    """Identity of a rubric: what compiling it depends on (task, seed, LLM, prompts, options)."""
    view = {k: to_container(cfg)[k] for k in ("task", "seed", "llm", "prompts", "rubric")}
    view["llm"] = {k: v for k, v in view["llm"].items() if k not in ("judge_mode",)}
    return config_hash(view, {"group": group, "dataset": dataset})


def _subsample(
    frame: pl.DataFrame, limit: int | None, seed: int
) -> tuple[pl.DataFrame, np.ndarray]:
    """At most `limit` rows (seeded, order kept) and their original positions."""
    idx = np.arange(len(frame))
    if limit and limit < len(frame):
        idx = np.sort(np.random.default_rng(seed).choice(len(frame), size=limit, replace=False))
    return frame[idx], idx


def _find_rubric(job: StageRun, key: str) -> tuple[Rubric, str] | None:
    runs = job.client.search_runs(
        [job.experiment_id],
        filter_string=f"tags.`synque.rubric_key` = '{key}' and tags.`synque.stage` = 'rubric' "
        "and attributes.status = 'FINISHED'",
        max_results=1,
    )
    if not runs:
        return None
    text = mlflow.artifacts.load_text(f"runs:/{runs[0].info.run_id}/rubric.json")
    return Rubric.from_json(text), runs[0].info.run_id


def _compile_rubric_run(
    job: StageRun,
    cfg: DictConfig,
    llm: Any,
    task: Task,
    group: str,
    name: str,
    key: str,
    data: tuple[pl.DataFrame, pl.DataFrame] | None = None,
) -> tuple[Rubric, str]:
    """Compile one rubric in its own child run (stage `rubric`) and return it with its run id.

    `data` = (synthetic set, real sample) when the caller has them loaded already.
    """
    seed = int(cfg.seed)
    synth, real = data or (task.load_candidate(group, name), task.real_sample(group, seed))
    tags = {"stage": "rubric", "rubric_key": key, "llm": str(cfg.llm.name)}
    with job.child(name, group, tags=tags) as run:
        log_inputs(task, group, name, synth, real, seed)
        before = llm.metrics() if llm is not None else {}
        if llm is None:
            rubric = Rubric.from_json(task.released_rubric(group, name, seed))
            mlflow.set_tag("synque.rubric_source", "released")
        else:
            rubric = compile_rubric(
                llm,
                cfg.prompts,
                synth['text'].to_list(),
                real['text'].to_list(),
                n_points=int(cfg.rubric.n_points),
                n_samples=int(cfg.rubric.n_samples),
                seed=seed,
                max_attempts=int(cfg.rubric.max_attempts),
                max_tokens=int(cfg.rubric.max_tokens),
                temperature=float(cfg.rubric.temperature),
                progress=bool(cfg.progress),
            )
            log_llm_usage(llm, before)
        mlflow.log_text(rubric.to_json(), "rubric.json")
        mlflow.log_metrics({f"n_{k}": len(getattr(rubric, k)) for k in RUBRIC_FIELDS})
        return rubric, run.info.run_id


def _lens_setup(cfg: DictConfig, stage: str) -> tuple[Task, StageRun, list[tuple[str, str]]]:
    task = load_task(cfg)
    if not uses_replay(cfg):
        Prompts.from_config(cfg.prompts)  # fail on a bad prompts file before any work
    job = StageRun(cfg, stage, task.name, tags={"llm": str(cfg.llm.name)})
    return task, job, task.pairs()


def _run_llm_stage(cfg: DictConfig, stage: str, per_set: Any) -> None:
    """Shared lifecycle of `rubric` and `lens`: skip, resume, one backend for every set."""
    task, job, pairs = _lens_setup(cfg, stage)
    if job.finished_run() is not None:
        log.info("%s %s seed=%s already FINISHED: skipped", stage, task.name, cfg.seed)
        return
    with job:
        llm = open_llm(cfg)
        try:
            for group, name in job.pending(pairs, f"{stage} {task.name} seed={cfg.seed}"):
                per_set(job, cfg, llm, task, group, name)
            if llm is not None:
                log_llm_usage(llm)
        finally:
            if llm is not None:
                llm.close()


def run_rubric(cfg: DictConfig) -> None:
    """Compile (or, with llm=replay, import the released) rubric of every candidate set."""

    def per_set(
        job: StageRun, cfg: DictConfig, llm: Any, task: Task, group: str, name: str
    ) -> None:
        _compile_rubric_run(job, cfg, llm, task, group, name, rubric_key(cfg, group, name))

    _run_llm_stage(cfg, "rubric", per_set)


def run_lens(cfg: DictConfig) -> None:
    """LENS of every candidate set: rubric (reused, compiled or released), then judgments."""
    _run_llm_stage(cfg, "lens", _lens_one)


def _lens_one(job: StageRun, cfg: DictConfig, llm: Any, task: Task, group: str, name: str) -> None:
    seed = int(cfg.seed)
    scfg = cfg.stage
    synth = task.load_candidate(group, name)
    real = task.real_sample(group, seed)
    key = rubric_key(cfg, group, name)
    found = _find_rubric(job, key)
    rubric, rubric_run = found or _compile_rubric_run(
        job, cfg, llm, task, group, name, key, data=(synth, real)
    )
    tags = {"llm": str(cfg.llm.name), "rubric_run": rubric_run}
    with job.child(name, group, tags=tags):
        log_inputs(task, group, name, synth, real, seed)
        if llm is None:
            synth_recs, real_recs = task.released_judgments(group, name, seed, str(cfg.llm.judge))
            # The released judgments are used as released (the paper's judged real set can
            # differ from the seed's sample file); debug slices cut them like the data.
            judgments = judgments_from_released(
                synth_recs[: task.max_examples or None], real_recs[: task.max_real or None]
            )
        else:
            sub_seed = int(scfg.subsample_seed)
            synth_sub, synth_idx = _subsample(synth, scfg.max_synthetic, sub_seed)
            real_sub, real_idx = _subsample(real, scfg.max_real, sub_seed)
            before = llm.metrics()
            judgments = judge_examples(
                llm,
                rubric,
                cfg.prompts,
                synth_sub['text'].to_list(),
                real_sub['text'].to_list(),
                mode=str(scfg.mode),
                max_tokens=int(scfg.max_tokens),
                progress=bool(cfg.progress),
            )
            positions = {"synthetic": synth_idx, "real": real_idx}
            judgments["index"] = [
                int(positions[s][i]) for s, i in zip(judgments.set, judgments["index"], strict=True)
            ]
            log_llm_usage(llm, before)
        scores = lens_scores(judgments)
        proxies = [p for p in LENS_PROXIES if p in scores]
        mlflow.set_tags(
            {
                "synque.proxy": ",".join(proxies),
                **{f"synque.higher_is_better.{p}": "True" for p in proxies},
                **{f"synque.variant.{p}": "default" for p in proxies},
            }
        )
        mlflow.log_metrics(
            {
                **scores,
                "n_judged_synthetic": int((judgments.set == "synthetic").sum()),
                "n_judged_real": int((judgments.set == "real").sum()),
                "invalid_answers": int(judgments.n_invalid.sum()),
            }
        )
        log_table(judgments, "judgments.parquet")
        mlflow.log_text(rubric.to_json(), "rubric.json")
