"""The `rubric` stage: one rubric per candidate set, compiled by any LLM backend.

A rubric run is found again by its `synque.rubric_key` (what compiling depends on), so a
`lens` job reuses a rubric another job compiled; `llm=replay` or `rubric.source=released`
imports the paper's released rubrics instead of calling a model. The lifecycle both LLM
stages share (check the backend can see the examples, skip a finished job, resume, one
backend for every candidate set, usage logged) is `run_llm_stage`.

Image tasks: the examples an LLM sees are image parts (:func:`synque.llm.image_part`),
fitted to `prompts.max_image_size`; a rubric shows `rubric.n_images` of each set.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import polars as pl
from omegaconf import DictConfig, OmegaConf

from synque import SynqueError
from synque.config import config_hash
from synque.data.task import Task
from synque.lens import RUBRIC_FIELDS, Prompts, Rubric, compile_rubric
from synque.lens.rubric import RubricError, compile_rubrics
from synque.llm import LLM, ReplayLLM, build_llm, check_llm_inputs, image_part, llm_kind
from synque.llm.tracing import stage_tracer
from synque.stages.common import load_task
from synque.tracking import TAG, StageRun, log_inputs, log_llm_usage

log = logging.getLogger(__name__)

#: Work on one candidate set: (job, cfg, llm or None with replay, task, group, name).
PerSet = Callable[[StageRun, DictConfig, LLM | None, Task, str, str], None]
RUBRIC_SOURCES = ("compile", "released")


def llm_examples(
    task: Task, frame: pl.DataFrame, source: str, cfg: DictConfig
) -> list[str] | list[dict]:
    """What an LLM is shown of each example: its text, or an image part keyed by content."""
    inputs = task.model_inputs(frame, source)
    if task.modality != "image":
        return inputs
    size = cfg.prompts.get("max_image_size") or None
    return [image_part(path, max_size=size) for path in inputs]


def configured_source(cfg: DictConfig) -> str:
    """`rubric.source`, checked: `compile` (by the LLM) or `released` (the paper's)."""
    source = str(cfg.rubric.get("source") or "compile")
    if source not in RUBRIC_SOURCES:
        known = ", ".join(RUBRIC_SOURCES)
        raise SynqueError(f"rubric.source must be one of {known}, got {source!r}")
    return source


def rubric_source(cfg: DictConfig, llm: LLM | None) -> str:
    """`released` with llm=replay (no model) or rubric.source=released, else `compile`."""
    return "released" if llm is None or isinstance(llm, ReplayLLM) else configured_source(cfg)


def rubric_key(cfg: DictConfig, group: str, dataset: str) -> str:
    """Identity of a rubric: what compiling it depends on (task, seed, LLM, prompts, options).

    The LLM enters by its kind and settings, not by how it is built (`_target_`), how the
    judge is later asked (`judge_mode`) nor how many invalid judge answers are tolerated
    (`max_invalid_rate`), so those never orphan a compiled rubric.
    """
    view = {
        k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
        for k in ("task", "seed", "llm", "prompts", "rubric")
    }
    settings = {
        k: v
        for k, v in view["llm"].items()
        if k not in ("judge_mode", "_target_", "max_invalid_rate")
    }
    view["llm"] = {**settings, "kind": llm_kind(cfg.llm)}
    return config_hash(view, {"group": group, "dataset": dataset})


def find_rubric_run(job: StageRun, key: str) -> tuple[Rubric, str] | None:
    """A FINISHED rubric run with this key (any job of the experiment): (rubric, run id)."""
    runs = job.client.search_runs(
        [job.experiment_id],
        filter_string=f"tags.`{TAG}rubric_key` = '{key}' and tags.`{TAG}stage` = 'rubric' "
        "and attributes.status = 'FINISHED'",
        max_results=1,
    )
    if not runs:
        return None
    text = mlflow.artifacts.load_text(f"runs:/{runs[0].info.run_id}/rubric.json")
    return Rubric.from_json(text), runs[0].info.run_id


def _compile_options(cfg: DictConfig, task: Task) -> dict[str, Any]:
    """The `compile_rubric` options of this config (shared with `precompile_rubrics`)."""
    images = task.modality == "image"
    return {
        "n_points": int(cfg.rubric.n_points),
        "n_samples": int(cfg.rubric.n_images if images else cfg.rubric.n_samples),
        "seed": int(cfg.seed),
        "max_tokens": int(cfg.rubric.max_tokens),
        "temperature": float(cfg.rubric.temperature),
    }


#: Rubrics compiled together ahead of their runs, by `rubric_key` (see `precompile_rubrics`).
_PRECOMPILED: dict[str, Rubric] = {}


def precompile_rubrics(
    job: StageRun, cfg: DictConfig, llm: LLM | None, task: Task, pairs: list[tuple[str, str]]
) -> int:
    """Compile every rubric still to compile as ONE batch per attempt; how many.

    Why: a local model generates a batch of replies in about the time of one (a decoding
    step reads every weight once, whatever the batch), and the quickstart compiled its
    rubrics one after the other, retries included. The rubrics wait in `_PRECOMPILED` until
    `compile_rubric_run` logs each in its own run; they are the ones compiled one by one.
    When any set fails, nothing is kept and each set is compiled (and fails) in its run.
    """
    if llm is None or rubric_source(cfg, llm) != "compile" or len(pairs) < 2:
        return 0
    if not getattr(llm, "batches_generation", False) or getattr(llm.tracer, "mode", "") == "all":
        # a server already runs requests side by side, and `tracking.traces=all` wants every
        # rubric request traced in its candidate's run: batching would gain nothing there,
        # or lose those traces (a sampled job keeps the judging traces, not the rubric ones)
        return 0
    seed = int(cfg.seed)
    keys, sets = [], []
    for group, name in pairs:
        key = rubric_key(cfg, group, name)
        if find_rubric_run(job, key) is not None:
            continue
        synth, real = task.load_candidate(group, name), task.real_sample(group, seed)
        keys.append(key)
        sets.append(
            (
                llm_examples(task, synth, name, cfg),
                llm_examples(task, real, f"real sample of {group}", cfg),
            )
        )
    if len(sets) < 2:
        return 0
    tracer, llm.tracer = llm.tracer, None  # the requests have no candidate run to go to
    try:
        rubrics = compile_rubrics(
            llm,
            cfg.prompts,
            sets,
            **_compile_options(cfg, task),
            max_attempts=int(cfg.rubric.max_attempts),
            progress=bool(cfg.progress),
        )
    except RubricError as err:
        log.info("rubrics compiled together failed (%s); compiling one set at a time", err)
        return 0
    finally:
        llm.tracer = tracer
    _PRECOMPILED.update(zip(keys, rubrics, strict=True))
    return len(rubrics)


def compile_rubric_run(
    job: StageRun,
    cfg: DictConfig,
    llm: LLM | None,
    task: Task,
    group: str,
    name: str,
    data: tuple[pl.DataFrame, pl.DataFrame] | None = None,
    key: str | None = None,
) -> tuple[Rubric, str]:
    """Compile (or, without an LLM, import the released) rubric in a child run of its own.

    `data` = (synthetic set, real sample) and `key` = its `rubric_key` when the caller has
    them already. Returns the rubric and the id of its run (stage `rubric`).
    """
    seed = int(cfg.seed)
    synth, real = data or (task.load_candidate(group, name), task.real_sample(group, seed))
    key = key or rubric_key(cfg, group, name)
    tags = {"stage": "rubric", "rubric_key": key, "llm": str(cfg.llm.name)}
    with job.child(name, group, tags=tags) as run:
        log_inputs(task, group, name, synth, real, seed)
        if llm is None or rubric_source(cfg, llm) == "released":
            rubric = Rubric.from_json(task.released_rubric(group, name, seed))
            mlflow.set_tag(f"{TAG}rubric_source", "released")
        else:
            before = llm.metrics()
            rubric = _PRECOMPILED.pop(key, None) or compile_rubric(
                llm,
                cfg.prompts,
                llm_examples(task, synth, name, cfg),
                llm_examples(task, real, f"real sample of {group}", cfg),
                **_compile_options(cfg, task),
                max_attempts=int(cfg.rubric.max_attempts),
                progress=bool(cfg.progress),
            )
            log_llm_usage(llm, before)
        mlflow.log_text(rubric.to_json(), "rubric.json")
        mlflow.log_metrics({f"n_{k}": len(getattr(rubric, k)) for k in RUBRIC_FIELDS})
        return rubric, run.info.run_id


def rubric_for(
    job: StageRun,
    cfg: DictConfig,
    llm: LLM | None,
    task: Task,
    group: str,
    name: str,
    data: tuple[pl.DataFrame, pl.DataFrame],
) -> tuple[Rubric, str]:
    """The rubric of a candidate set: reused from a FINISHED rubric run, else compiled."""
    key = rubric_key(cfg, group, name)
    return find_rubric_run(job, key) or compile_rubric_run(
        job, cfg, llm, task, group, name, data, key
    )


def run_llm_stage(cfg: DictConfig, stage: str, per_set: PerSet) -> None:
    """Lifecycle of `rubric` and `lens`: skip, resume, one backend for every candidate set.

    The LLM config and the prompts are checked before any run starts; with `llm=replay`
    no model is built (`per_set` gets None and reads released material).
    """
    task = load_task(cfg)
    seed = int(cfg.seed)
    replay = check_llm_inputs(cfg.llm, task.modality).kind == ReplayLLM.kind
    # replay reads released material; where the paper released no judgments (images), the
    # judge is replayed from recordings of an earlier run instead
    released = replay and (stage == "rubric" or task.has_released_judgments(seed, cfg.llm.judge))
    if not replay:
        Prompts.from_config(cfg.prompts)
        configured_source(cfg)
    tracer = stage_tracer(cfg)  # a bad tracking.traces fails here, before a model loads
    if task.modality == "image" and not released:
        task.preflight(seed, images=True)  # every image read before any run opens
    job = StageRun(cfg, stage, task.name, tags={"llm": str(cfg.llm.name)})
    if job.finished_run() is not None:
        log.info("%s %s seed=%s already FINISHED: skipped", stage, task.name, cfg.seed)
        return
    with contextlib.ExitStack() as stack:
        # the model loads before the run opens: a model that cannot load leaves no run
        cache_dir = Path(cfg.paths.cache_dir)
        llm = None if released else stack.enter_context(build_llm(cfg.llm, cache_dir))
        if llm is not None:
            llm.tracer = tracer  # traces of its calls, in each candidate set's run
        with job:
            done = job.finished_children()
            pairs = list(task.pairs())
            try:
                precompile_rubrics(job, cfg, llm, task, [p for p in pairs if p not in done])
                for group, name in job.pending(pairs, f"{stage} {task.name} seed={seed}"):
                    per_set(job, cfg, llm, task, group, name)
            finally:
                _PRECOMPILED.clear()
            if llm is not None:
                log_llm_usage(llm)


def _rubric_one(
    job: StageRun, cfg: DictConfig, llm: LLM | None, task: Task, group: str, name: str
) -> None:
    compile_rubric_run(job, cfg, llm, task, group, name)


def run_rubric(cfg: DictConfig) -> None:
    """Compile (or, with llm=replay, import the released) rubric of every candidate set."""
    run_llm_stage(cfg, "rubric", _rubric_one)
