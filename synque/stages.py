"""Stage lifecycles for the embedding-based stages (`embed`, `repr`).

Each stage function takes the composed config, validates what it can before heavy work,
skips a config hash that already FINISHED, and logs one parent run with a child run per
candidate set (see `synque.tracking.StageRun`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from synque import SynqueError
from synque.embedders import SentenceEmbedder, build_embedder, matrix_digest
from synque.proxies import PROXIES, compute_proxy
from synque.tasks import Task, load_task
from synque.tracking import StageRun, log_inputs

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
        name = str(pcfg.get("name", key))
        if name not in PROXIES:
            raise SynqueError(f"proxy '{name}' is not registered (have {', '.join(PROXIES)})")
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
        tags={"embedder": str(cfg.embedder.model), "proxy": ",".join(proxies)},
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
