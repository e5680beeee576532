"""The `embed` stage: fill the embedding cache for every candidate set and real sample."""

from __future__ import annotations

import logging

import mlflow
from omegaconf import DictConfig

from synque.embed.base import matrix_digest
from synque.stages.common import embedder_label, load_task, open_embedder
from synque.tracking import StageRun

log = logging.getLogger(__name__)


def run_embed(cfg: DictConfig) -> None:
    """Embed every candidate set and real sample; log the matrices' digests."""
    task = load_task(cfg)
    seed = int(cfg.seed)
    job = StageRun(cfg, "embed", task.name, tags={"embedder": embedder_label(cfg)})
    if job.finished_run() is not None:
        log.info("embed %s seed=%s already FINISHED: skipped", task.name, seed)
        return
    pairs = task.pairs()
    with job:
        task.preflight(seed, images=True)  # every file and image read before any model loads
        embedder = open_embedder(cfg)
        for group in dict.fromkeys(g for g, _ in pairs):
            real = task.real_sample(group, seed)
            real_emb = embedder.embed(task.model_inputs(real), desc=f"real {group}")
            mlflow.log_param(f"embedding_digest_real.{group}", matrix_digest(real_emb))
        for group, name in job.pending(pairs, f"embed {task.name} seed={seed}"):
            synth = task.load_candidate(group, name)
            emb = embedder.embed(task.model_inputs(synth), desc=name)
            with job.child(name, group):
                mlflow.log_params(
                    {
                        "n_synthetic": synth.height,
                        "dim": emb.shape[1],
                        "embedding_digest": matrix_digest(emb),
                    }
                )
        mlflow.log_metrics({f"embed_{k}": float(v) for k, v in embedder.stats.items()})
