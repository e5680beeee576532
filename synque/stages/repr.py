"""The `repr` stage: every proxy of the `proxy` group, per candidate set, on embeddings."""

from __future__ import annotations

import logging
import time
import warnings

import mlflow
import numpy as np
import polars as pl
from omegaconf import DictConfig

from synque import SynqueError
from synque.embed.base import Embedder, matrix_digest
from synque.proxies import PROXIES, ProxyWarning, check_proxy_config
from synque.proxies.registry import compute_proxy_repeats
from synque.stages.common import embedder_label, load_task, open_embedder
from synque.tracking import StageRun, log_inputs

log = logging.getLogger(__name__)


def proxy_configs(cfg: DictConfig) -> dict[str, DictConfig]:
    """The selected proxies, each checked (name and options) before any heavy work."""
    proxies = cfg.get("proxy") or {}
    if not proxies:
        raise SynqueError("config: no proxy selected (e.g. proxy=[pad,mmd])")
    for key, pcfg in proxies.items():
        try:
            check_proxy_config(str(pcfg.get("name", key)), pcfg)
        except ValueError as exc:
            raise SynqueError(f"proxy.{key}: {exc}") from None
    return dict(proxies.items())


def score_set(
    proxies: dict[str, DictConfig], synth_emb: np.ndarray, real_emb: np.ndarray, seed: int
) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """(proxy values, seconds per proxy, tags saying each proxy's variant and orientation).

    A proxy with `noise_seeds: N > 1` is computed N times (its noise seed counting up) and
    logs the mean under its own name, so every reader keeps working, plus the sample standard
    deviation as `<proxy>.std`; that metric is not named in the run's `synque.proxy` tag, so
    readers never mistake it for a proxy, and `select` reads it (with the tag
    `synque.noise_seeds.<proxy>`) as the proxy's noise.

    A ``ProxyWarning`` a proxy emits (e.g. FID on fewer samples than dimensions) becomes the tag
    ``synque.warning.<proxy>`` (one line; several joined by "; ") and a log line, so the caveat
    is stored next to the value; other warnings pass through untouched.  A ``ValueError`` of a
    proxy (e.g. fewer points than nearest_k) becomes a one-line ``SynqueError`` naming it.
    """
    metrics, timings, tags = {}, {}, {}
    for key, pcfg in proxies.items():
        proxy = str(pcfg.get("name", key))
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ProxyWarning)
            try:
                values = compute_proxy_repeats(proxy, synth_emb, real_emb, pcfg, seed=seed)
            except ValueError as exc:
                raise SynqueError(f"proxy.{key}: {exc}") from exc
        metrics[proxy] = float(np.mean(values))
        if len(values) > 1:
            metrics[f"{proxy}.std"] = float(np.std(values, ddof=1))
            tags[f"synque.noise_seeds.{proxy}"] = str(len(values))
        timings[f"seconds.{proxy}"] = time.perf_counter() - start
        tags[f"synque.variant.{proxy}"] = str(pcfg.get("variant", "default"))
        tags[f"synque.higher_is_better.{proxy}"] = str(PROXIES[proxy].higher_is_better)
        notes = []
        for record in caught:
            if issubclass(record.category, ProxyWarning):
                notes.append(" ".join(str(record.message).split()))
            else:  # not ours: hand it back to the normal warning machinery
                warnings.warn_explicit(
                    record.message, record.category, record.filename, record.lineno
                )
        if notes:
            tags[f"synque.warning.{proxy}"] = "; ".join(dict.fromkeys(notes))
            log.warning("%s", tags[f"synque.warning.{proxy}"])
    return metrics, timings, tags


def run_repr(cfg: DictConfig) -> None:
    """Proxies of every candidate set against the real sample of `seed`."""
    proxies = proxy_configs(cfg)
    task = load_task(cfg)
    seed = int(cfg.seed)
    names = ",".join(str(p.get("name", k)) for k, p in proxies.items())
    job = StageRun(cfg, "repr", task.name, tags={"embedder": embedder_label(cfg), "proxy": names})
    if (done := job.finished_run()) is not None:
        log.info(
            "repr %s seed=%s already FINISHED (run %s): skipped", task.name, seed, done.info.run_id
        )
        return
    pairs = task.pairs()
    with job:
        task.preflight(seed, images=True)  # every file and image read before any model loads
        embedder: Embedder = open_embedder(cfg)
        real_cache: dict[str, tuple[pl.DataFrame, np.ndarray]] = {}
        proxy_seconds = child_seconds = 0.0
        for group, name in job.pending(pairs, f"repr {task.name} seed={seed}"):
            if group not in real_cache:
                real = task.real_sample(group, seed)
                real_cache = {
                    group: (real, embedder.embed(task.model_inputs(real), desc=f"real {group}"))
                }
            real, real_emb = real_cache[group]
            synth = task.load_candidate(group, name)
            synth_emb = embedder.embed(task.model_inputs(synth), desc=name)
            child_start = time.perf_counter()
            with job.child(name, group):
                log_inputs(task, group, name, synth, real, seed)
                mlflow.log_params(
                    {
                        "n_synthetic": synth.height,
                        "n_real": real.height,
                        "embedding_digest_synthetic": matrix_digest(synth_emb),
                        "embedding_digest_real": matrix_digest(real_emb),
                    }
                )
                metrics, timings, tags = score_set(proxies, synth_emb, real_emb, seed)
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
