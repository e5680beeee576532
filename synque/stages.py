"""Stage lifecycles for the embedding-based stages (`embed`, `repr`).

Each stage function takes the composed config, validates what it can before heavy work,
skips a config hash that already FINISHED, and logs one parent run with a child run per
candidate set (see `synque.tracking.StageRun`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from synque import SynqueError
from synque.config import config_hash, to_container
from synque.embedders import SentenceEmbedder, build_embedder, matrix_digest
from synque.lens import (
    RUBRIC_FIELDS,
    Prompts,
    Rubric,
    compile_rubric,
    judge_examples,
    judgments_from_released,
    lens_scores,
)
from synque.llm import build_llm
from synque.proxies import PROXIES, check_proxy_config, compute_proxy
from synque.tasks import Task, load_task
from synque.tracking import StageRun, log_inputs, log_table

log = logging.getLogger(__name__)


def candidate_names(task: Task) -> list[tuple[str, str]]:
    """All (group, candidate) pairs; touching the files early surfaces bad input before runs."""
    pairs = [(g, n) for g in task.groups() for n in task.candidates(g)]
    if not pairs:
        raise SynqueError(f"task {task.name}: no candidate sets found under {task.root}")
    return pairs


def _proxy_configs(cfg: DictConfig) -> dict[str, DictConfig]:
    proxies = cfg.get("proxy") or {}
    if not proxies:
        raise SynqueError("config: no proxy selected (e.g. proxy=[pad,mmd])")
    for key, pcfg in proxies.items():
        try:
            check_proxy_config(str(pcfg.get("name", key)), pcfg)
        except ValueError as exc:
            raise SynqueError(f"proxy.{key}: {exc}") from None
    return dict(proxies.items())


def _embed_real(
    embedder: SentenceEmbedder, task: Task, group: str, seed: int
) -> tuple[pd.DataFrame, np.ndarray]:
    real = task.real_sample(group, seed)
    return real, embedder.embed(real.text.tolist(), desc=f"real {group}")


def run_repr(cfg: DictConfig) -> None:
    """PAD/MMD/MDM/MAUVE of every candidate set against the real sample of `seed`."""
    proxies = _proxy_configs(cfg)
    task = load_task(cfg)
    seed = int(cfg.seed)
    job = StageRun(
        cfg,
        "repr",
        task.name,
        tags={
            "embedder": str(cfg.embedder.model),
            "proxy": ",".join(str(p.get("name", k)) for k, p in proxies.items()),
        },
    )
    if (done_run := job.finished_run()) is not None:
        log.info(
            "repr %s seed=%s already FINISHED (run %s): skipped",
            task.name,
            seed,
            done_run.info.run_id,
        )
        return
    pairs = candidate_names(task)
    with job:
        done = job.finished_children()
        embedder = build_embedder(cfg.embedder, Path(cfg.paths.cache_dir), cfg.progress)
        from tqdm.auto import tqdm

        bar = tqdm(
            pairs, desc=f"repr {task.name} seed={seed}", unit="set", disable=not cfg.progress
        )
        real_cache: dict[str, tuple[pd.DataFrame, np.ndarray]] = {}
        proxy_seconds = child_seconds = 0.0
        for group, name in bar:
            if (group, name) in done:
                job.children_skipped += 1
                continue
            if group not in real_cache:
                real_cache = {group: _embed_real(embedder, task, group, seed)}
            real, real_emb = real_cache[group]
            synth = task.load_candidate(group, name)
            synth_emb = embedder.embed(synth.text.tolist(), desc=name)
            child_start = time.perf_counter()
            with job.child(name, group):
                log_inputs(task, group, name, synth, real, seed)
                mlflow.log_params(
                    {
                        "n_synthetic": len(synth),
                        "n_real": len(real),
                        "embedding_digest_synthetic": matrix_digest(synth_emb),
                        "embedding_digest_real": matrix_digest(real_emb),
                    }
                )
                metrics, timings, tags = {}, {}, {}
                for key, pcfg in proxies.items():
                    proxy = str(pcfg.get("name", key))
                    start = time.perf_counter()
                    metrics[proxy] = compute_proxy(proxy, synth_emb, real_emb, pcfg, seed=seed)
                    timings[f"seconds.{proxy}"] = time.perf_counter() - start
                    tags[f"synque.variant.{proxy}"] = str(pcfg.get("variant", "default"))
                    tags[f"synque.higher_is_better.{proxy}"] = str(PROXIES[proxy].higher_is_better)
                mlflow.set_tags(tags)
                mlflow.log_metrics({**metrics, **timings})
            proxy_seconds += sum(timings.values())
            child_seconds += time.perf_counter() - child_start
        if job.children_logged:
            # what tracking costs per candidate set, beyond computing the proxies
            mlflow.log_metric(
                "mlflow_seconds_per_child", (child_seconds - proxy_seconds) / job.children_logged
            )
        mlflow.log_metrics({f"embed_{k}": float(v) for k, v in embedder.stats.items()})


def run_embed(cfg: DictConfig) -> None:
    """Fill the embedding cache for every candidate set and real sample; log digests."""
    task = load_task(cfg)
    seed = int(cfg.seed)
    job = StageRun(cfg, "embed", task.name, tags={"embedder": str(cfg.embedder.model)})
    if job.finished_run() is not None:
        log.info("embed %s seed=%s already FINISHED: skipped", task.name, seed)
        return
    pairs = candidate_names(task)
    with job:
        embedder = build_embedder(cfg.embedder, Path(cfg.paths.cache_dir), cfg.progress)
        done = job.finished_children()
        for group in dict.fromkeys(g for g, _ in pairs):
            _, real_emb = _embed_real(embedder, task, group, seed)
            mlflow.log_param(f"embedding_digest_real.{group}", matrix_digest(real_emb))
        for group, name in pairs:
            if (group, name) in done:
                job.children_skipped += 1
                continue
            synth = task.load_candidate(group, name)
            emb = embedder.embed(synth.text.tolist(), desc=name)
            with job.child(name, group):
                mlflow.log_params(
                    {
                        "n_synthetic": len(synth),
                        "dim": emb.shape[1],
                        "embedding_digest": matrix_digest(emb),
                    }
                )
        mlflow.log_metrics({f"embed_{k}": float(v) for k, v in embedder.stats.items()})


# --- LENS: rubric compilation and judging ----------------------------------------------------
LENS_PROXIES = ("lens", "lens_raw", "lens_expected", "lens_raw_expected")


def _uses_replay(cfg: DictConfig) -> bool:
    return str(cfg.llm.kind) == "replay"


def rubric_key(cfg: DictConfig, group: str, dataset: str) -> str:
    """Identity of a rubric: what compiling it depends on (task, seed, LLM, prompts, options)."""
    view = {k: to_container(cfg)[k] for k in ("task", "seed", "llm", "prompts", "rubric")}
    view["llm"] = {k: v for k, v in view["llm"].items() if k not in ("judge_mode",)}
    return config_hash(view, {"group": group, "dataset": dataset})


def _subsample(
    frame: pd.DataFrame, limit: int | None, seed: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """At most `limit` rows (seeded, order kept) and their original positions."""
    idx = np.arange(len(frame))
    if limit and limit < len(frame):
        idx = np.sort(np.random.default_rng(seed).choice(len(frame), size=limit, replace=False))
    return frame.iloc[idx].reset_index(drop=True), idx


def _log_llm_delta(llm: Any, before: dict[str, float]) -> dict[str, float]:
    after = llm.metrics()
    delta = {k: after[k] - before.get(k, 0.0) for k in after if not k.endswith(("_rate", "_per_s"))}
    if delta.get("llm_seconds", 0) > 0 and delta.get("llm_calls", 0) > 0:
        delta["llm_calls_per_s"] = delta["llm_calls"] / delta["llm_seconds"]
    mlflow.log_metrics(delta)
    return after


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
    data: tuple[pd.DataFrame, pd.DataFrame] | None = None,
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
                synth.text.tolist(),
                real.text.tolist(),
                n_points=int(cfg.rubric.n_points),
                n_samples=int(cfg.rubric.n_samples),
                seed=seed,
                max_attempts=int(cfg.rubric.max_attempts),
                max_tokens=int(cfg.rubric.max_tokens),
                temperature=float(cfg.rubric.temperature),
                progress=bool(cfg.progress),
            )
            _log_llm_delta(llm, before)
        mlflow.log_text(rubric.to_json(), "rubric.json")
        mlflow.log_metrics({f"n_{k}": len(getattr(rubric, k)) for k in RUBRIC_FIELDS})
        return rubric, run.info.run_id


def _lens_setup(cfg: DictConfig, stage: str) -> tuple[Task, StageRun, list[tuple[str, str]]]:
    task = load_task(cfg)
    if not _uses_replay(cfg):
        Prompts.from_config(cfg.prompts)  # fail on a bad prompts file before any work
    job = StageRun(cfg, stage, task.name, tags={"llm": str(cfg.llm.name)})
    return task, job, candidate_names(task)


def _open_llm(cfg: DictConfig) -> Any:
    """The configured backend; None for replay (the stages read released material)."""
    if _uses_replay(cfg):
        return None
    return build_llm(cfg.llm, Path(cfg.paths.cache_dir))


def _run_llm_stage(cfg: DictConfig, stage: str, per_set: Any) -> None:
    """Shared lifecycle of `rubric` and `lens`: skip, resume, one backend for every set."""
    task, job, pairs = _lens_setup(cfg, stage)
    if job.finished_run() is not None:
        log.info("%s %s seed=%s already FINISHED: skipped", stage, task.name, cfg.seed)
        return
    with job:
        done = job.finished_children()
        llm = _open_llm(cfg)
        try:
            for group, name in _progress(pairs, f"{stage} {task.name} seed={cfg.seed}", cfg):
                if (group, name) in done:
                    job.children_skipped += 1
                    continue
                per_set(job, cfg, llm, task, group, name)
            if llm is not None:
                mlflow.log_metrics(llm.metrics())
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
                synth_sub.text.tolist(),
                real_sub.text.tolist(),
                mode=str(scfg.mode),
                max_tokens=int(scfg.max_tokens),
                progress=bool(cfg.progress),
            )
            positions = {"synthetic": synth_idx, "real": real_idx}
            judgments["index"] = [
                int(positions[s][i]) for s, i in zip(judgments.set, judgments["index"], strict=True)
            ]
            _log_llm_delta(llm, before)
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


def _progress(items: list, desc: str, cfg: DictConfig):  # noqa: ANN202
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="set", disable=not cfg.progress)
