"""The `generate` stage: produce candidate synthetic labeled sets with any LLM backend.

A generation *strategy* (config) says how to ask: zero-shot per label, few-shot from the real
sample, a persona or a style, a temperature. Each example is one chat call with its own seed,
so every call is cached: a rerun, or a restart after a crash, never repeats a finished call.
The set is written to the task folder (`synthetic/<strategy>.jsonl`, atomically) and logged
as a run with the file as an artifact and an MLflow dataset input.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import polars as pl
from omegaconf import DictConfig, OmegaConf

from synque import SynqueError
from synque.data.io import read_table, write_jsonl_atomic
from synque.data.task import NO_GROUP
from synque.llm import LLM, ChatRequest, build_llm, check_llm
from synque.llm.tracing import stage_tracer
from synque.tracking import StageRun, content_digest, log_dataset, log_llm_usage

log = logging.getLogger(__name__)
KINDS = ("zero_shot", "few_shot", "persona", "style")


def build_prompt(
    strategy: Mapping[str, Any],
    label_name: str,
    describe: str,
    shots: Sequence[str],
) -> list[dict[str, str]]:
    """Chat messages asking for ONE example of `label_name` under a strategy."""
    kind = strategy.get("kind", "zero_shot")
    if kind not in KINDS:
        raise SynqueError(f"generate: strategy kind '{kind}' unknown (have {', '.join(KINDS)})")
    system = f"You write {describe}. Reply with the text only, no title, no quotes."
    ask = f"Write one {label_name} {strategy.get('item', 'example')}."
    if kind == "persona":
        system = f"You are {strategy['persona']}. " + system
    if kind == "style":
        ask += f" Style: {strategy['style']}."
    if kind == "few_shot" and shots:
        listed = "\n".join(f"- {s}" for s in shots)
        ask = f"Here are real examples (labels hidden):\n{listed}\n\n{ask} Match their style."
    if strategy.get("extra"):
        ask += " " + str(strategy["extra"])
    return [{"role": "system", "content": system}, {"role": "user", "content": ask}]


def clean_text(text: str, max_chars: int) -> str:
    """First non-empty line of a reply, without list markers, quotes or labels."""
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*•]|\d+[.)]|review:|text:)\s*", "", line, flags=re.I).strip()
        line = line.strip("\"“”' ")
        if len(line) >= 3:
            return line[:max_chars]
    return ""


def generate_set(
    llm: LLM,
    strategy: Mapping[str, Any],
    labels: Mapping[str, str],
    per_label: int,
    describe: str,
    real_texts: Sequence[str],
    seed: int,
    max_tokens: int,
    max_chars: int,
    progress: bool,
) -> pl.DataFrame:
    """Ask for `per_label` examples of each label; drop empty and duplicate replies.

    Returns columns `text` and `label` (the label's value in the data, as text).
    """
    rng = random.Random(seed)
    requests, meta = [], []
    for label, label_name in labels.items():
        for _ in range(per_label):
            shots = rng.sample(
                list(real_texts), min(int(strategy.get("n_shots", 4)), len(real_texts))
            )
            messages = build_prompt(strategy, label_name, describe, shots)
            requests.append(
                ChatRequest(
                    messages,
                    temperature=float(strategy.get("temperature", 0.8)),
                    max_tokens=max_tokens,
                    seed=seed * 100_003 + len(requests),
                )
            )
            meta.append(label)
    replies = llm.complete(requests, progress=progress)
    rows, seen = [], set()
    for label, reply in zip(meta, replies, strict=True):
        text = clean_text(reply.text, max_chars)
        if text and text.lower() not in seen:
            seen.add(text.lower())
            rows.append({"text": text, "label": label})
    if len({r["label"] for r in rows}) < 2:
        raise SynqueError(
            f"generate: strategy '{strategy.get('name')}' produced fewer than two labels "
            f"({len(rows)} usable replies of {len(requests)})"
        )
    return pl.DataFrame(rows, schema={"text": pl.String, "label": pl.String})


def _generate_one(
    cfg: DictConfig, llm: LLM, name: str, real_texts: Sequence[str], out_dir: Path
) -> None:
    """One strategy's candidate set: generated, written atomically, logged in the open run."""
    gcfg = cfg.generate
    strategy = gcfg.strategies[name]
    labels = {str(k): str(v) for k, v in gcfg.labels.items()}
    before = llm.metrics()
    frame = generate_set(
        llm,
        {"name": name, **OmegaConf.to_container(strategy, resolve=True)},
        labels,
        int(gcfg.per_label),
        str(gcfg.describe),
        real_texts,
        seed=int(cfg.seed),
        max_tokens=int(gcfg.max_tokens),
        max_chars=int(gcfg.max_chars),
        progress=bool(cfg.progress),
    )
    path = write_jsonl_atomic(out_dir / f"{name}.jsonl", frame.iter_rows(named=True))
    mlflow.log_artifact(str(path))
    log_dataset(
        frame,
        name=name,
        context="generated",
        source=path,
        digest=content_digest(frame["text"].to_list()),
        targets="label",
    )
    log_llm_usage(llm, before)
    mlflow.log_metrics({"n_examples": len(frame), "n_requested": len(labels) * int(gcfg.per_label)})
    mlflow.log_params({f"strategy.{k}": v for k, v in strategy.items()})


def run_generate(cfg: DictConfig) -> None:
    """Generate one candidate set per configured strategy into `task.root/synthetic/`."""
    gcfg = cfg.generate
    root = Path(str(cfg.task.root)).expanduser()
    sample = root / "real" / "sample.jsonl"
    if not sample.is_file():
        raise SynqueError(f"generate: {sample} not found (the real sample few-shot uses)")
    real_texts = read_table(sample)["text"].to_list()
    name = OmegaConf.select(cfg, "task.name", default=None) or root.name
    check_llm(cfg.llm)  # a bad llm config fails here, before a run is opened
    tracer = stage_tracer(cfg)  # and a bad tracking.traces
    job = StageRun(cfg, "generate", name, tags={"llm": str(cfg.llm.name)})
    if job.finished_run() is not None:
        log.info("generate %s: already FINISHED, skipped", name)
        return
    strategies = list(gcfg.strategies)[: gcfg.get("max_strategies") or None]
    with job, build_llm(cfg.llm, Path(cfg.paths.cache_dir)) as llm:
        llm.tracer = tracer  # traces of its calls, in each strategy's run
        pairs = [(NO_GROUP, s) for s in strategies]
        for _, strategy in job.pending(pairs, f"generate {name}", unit="strategy"):
            kind = str(gcfg.strategies[strategy].kind)
            with job.child(strategy, tags={"generation_strategy": kind}):
                _generate_one(cfg, llm, strategy, real_texts, root / "synthetic")
        log_llm_usage(llm)
