"""Downstream performance of a generative candidate set: fine-tune a causal LM on it, generate.

`train=lora`: each candidate set's records become prompt -> completion pairs (templates in the
config, `synque.train.prompts`); a causal LM learns them with a peft LoRA adapter (or, with
`lora: false`, all its weights), the loss counted on the completion tokens only; then it
answers the task's real test set, batched and greedy, and is scored: execution accuracy as
BIRD computes it when the records have SQLite databases (text2sql; `synque.train.sql_eval`),
else exact match and a normalised string similarity. The adapter (or the model) goes back to
the stage as an artifact folder with the base model named in `synque_model.json`, so
`load_trained(folder)` rebuilds the fine-tuned model anywhere.

Why a plain torch loop rather than Lightning: there is no validation or early stopping here
(the paper's recipes train a fixed number of epochs), and the loop must count the loss over
exactly the completion tokens of an accumulated step, which `num_items_in_batch` gives.
The base model loads once per job: a LoRA adapter is unloaded after each candidate set, which
leaves the base weights as they were; full fine-tuning reloads the base for each set.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import polars as pl

from synque import SynqueError
from synque.data.task import Task
from synque.train.base import MetricsCallback, Trainer, TrainResult, require
from synque.train.causal_lm import (
    MODEL_FILE,
    TrainSequence,
    batches,
    check_model,
    encode_pairs,
    encode_prompt,
    generate,
    load_base,
    load_trained,
    lr_factor,
    pad_token_id,
    train_loop,
)
from synque.train.prompts import Databases, PromptTemplate, render_records
from synque.train.sql_eval import (
    ExecutionEvaluator,
    exact_match,
    execution_accuracy,
    extract_sql,
    similarity,
)
from synque.utils.torch_threads import torch_threads

log = logging.getLogger(__name__)
#: Re-exported: the model-level steps live in `synque.train.causal_lm`.
__all__ = [
    "MODEL_FILE",
    "TrainSequence",
    "batches",
    "encode_pairs",
    "encode_prompt",
    "generate",
    "load_trained",
    "lr_factor",
    "LoRATrainer",
]

PREDICTIONS_FILE = "predictions.jsonl"
METRICS = ("auto", "exec_accuracy", "exact_match", "similarity")
LR_SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "bf16", "fp32")
#: Metric names a generative trainer can report as the task's native metric.
NATIVE = ("task_performance", "exec_accuracy")


@dataclass
class GenerativeResult(TrainResult):
    """A `TrainResult` with artifact folders for the candidate set's run
    (`{"adapter": path, "eval": path}`), logged by the stage beside the metrics."""

    artifacts: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Examples:
    """One set's records rendered: prompts, completions, databases (None without)."""

    prompts: list[str]
    completions: list[str]
    databases: list[Path | None]
    frame: pl.DataFrame  # the task's view (text, label) for dataset lineage


class LoRATrainer(Trainer):
    """Supervised fine-tuning of a causal LM (LoRA or full) per candidate set, scored by
    generation on the real test set."""

    native_metric: ClassVar[str] = "exec_accuracy"

    def __init__(
        self,
        *,
        model: str,
        gguf_file: str | None,
        prompt: str,
        completion: str,
        system: str | None,
        chat_template: bool,
        schema_rows: int,
        lora: bool,
        rank: int,
        alpha: float,
        dropout: float,
        target_modules: Sequence[str],
        lr: float,
        weight_decay: float,
        lr_schedule: str,
        warmup_ratio: float,
        epochs: int,
        max_steps: int | None,
        max_length: int,
        batch_size: int,
        grad_accum: int,
        gradient_checkpointing: bool,
        max_new_tokens: int,
        eval_batch_size: int,
        max_test_examples: int | None,
        metric: str,
        query_timeout: float,
        eval_workers: int,
        log_weights: bool,
        device: str,
        precision: str,
        threads: int | None,
        progress: bool = False,
    ) -> None:
        require(rank >= 1, "rank", rank, "must be >= 1")
        require(alpha > 0, "alpha", alpha, "must be > 0")
        require(0.0 <= dropout < 1.0, "dropout", dropout, "must be in [0, 1)")
        require(bool(target_modules), "target_modules", target_modules, "must name modules")
        require(lr > 0, "lr", lr, "must be > 0")
        require(0.0 <= warmup_ratio < 1.0, "warmup_ratio", warmup_ratio, "must be in [0, 1)")
        require(lr_schedule in LR_SCHEDULES, "lr_schedule", lr_schedule, f"one of {LR_SCHEDULES}")
        require(epochs >= 1, "epochs", epochs, "must be >= 1")
        require(max_steps is None or max_steps >= 1, "max_steps", max_steps, "must be >= 1 or null")
        require(max_length >= 16, "max_length", max_length, "must be >= 16")
        require(batch_size >= 1, "batch_size", batch_size, "must be >= 1")
        require(grad_accum >= 1, "grad_accum", grad_accum, "must be >= 1")
        require(max_new_tokens >= 1, "max_new_tokens", max_new_tokens, "must be >= 1")
        require(eval_batch_size >= 1, "eval_batch_size", eval_batch_size, "must be >= 1")
        require(
            max_test_examples is None or max_test_examples >= 1,
            "max_test_examples",
            max_test_examples,
            "must be >= 1 or null",
        )
        require(metric in METRICS, "metric", metric, f"one of {METRICS}")
        require(query_timeout > 0, "query_timeout", query_timeout, "must be > 0")
        require(precision in PRECISIONS, "precision", precision, f"one of {PRECISIONS}")
        require(device in ("auto", "cpu", "cuda"), "device", device, "auto, cpu or cuda")
        self.model_name = str(model)
        self.gguf_file = gguf_file
        self.template = PromptTemplate(str(prompt), str(completion), system)
        self.chat_template = bool(chat_template)
        self.schema_rows = int(schema_rows)
        self.lora = bool(lora)
        self.lora_settings = {
            "r": int(rank),
            "lora_alpha": float(alpha),
            "lora_dropout": float(dropout),
            "target_modules": [str(m) for m in target_modules],
        }
        self.optim = {
            "lr": float(lr),
            "weight_decay": float(weight_decay),
            "schedule": lr_schedule,
            "warmup_ratio": float(warmup_ratio),
        }
        self.epochs = int(epochs)
        self.max_steps = max_steps
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.grad_accum = int(grad_accum)
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.max_new_tokens = int(max_new_tokens)
        self.eval_batch_size = int(eval_batch_size)
        self.max_test_examples = max_test_examples
        self.metric = metric
        self.evaluator = ExecutionEvaluator(float(query_timeout), int(eval_workers))
        self.log_weights = bool(log_weights)
        self.device_setting = device
        self.precision = precision
        self.threads = threads
        self.progress = progress
        self._tests: dict[str, Examples] = {}
        self._base: Any = None  # (tokenizer, model) kept between LoRA candidate sets
        self._workdir = Path(tempfile.mkdtemp(prefix="synque-lora-"))
        weakref.finalize(self, shutil.rmtree, self._workdir, True)

    # -- the Trainer interface ------------------------------------------------------------
    def run_tags(self) -> dict[str, str]:
        return {
            **super().run_tags(),
            "base_model": self.model_name,
            "finetune": "lora" if self.lora else "full",
        }

    def plan(self, task: Task) -> list[tuple[str, str]]:
        """Check task, databases and templates on every set before any run opens."""
        if getattr(task, "modality", "text") != "text":
            raise SynqueError(
                f"train: LoRATrainer trains on text records; task {task.name} "
                "holds images (choose another train config)"
            )
        if task.native_metric not in NATIVE:
            raise SynqueError(
                f"train: task {task.name} reports {task.native_metric}, which needs its own "
                "environment (a web agent on live sites); import the released numbers with "
                "train=recorded"
            )
        check_model(self.model_name, self.gguf_file)
        databases = self._databases(task)
        needs_db = task.native_metric == "exec_accuracy" or self.metric == "exec_accuracy"
        pairs = task.pairs()
        for group in dict.fromkeys(g for g, _ in pairs):
            if needs_db:
                self._require_databases(task, group, databases)
            test = self._test_examples(task, group)
            if test.databases and self._use_execution(task, test):
                missing = [p for p in test.databases if p is None or not p.is_file()]
                if missing:
                    what = missing[0] or "named (no db_id field, and not exactly one database)"
                    raise SynqueError(
                        f"{databases.setting}: no SQLite database {what} for the real "
                        f"test set of {group} (BIRD's layout: <db_root>/<db_id>/<db_id>.sqlite)"
                    )
        for group, name in pairs:
            self._examples(task, group, name)  # templates and schemas checked up front
        return pairs

    def evaluate(
        self,
        task: Task,
        group: str,
        name: str,
        seed: int,
        metrics_callback: MetricsCallback | None = None,
    ) -> GenerativeResult:
        train = self._examples(task, group, name)
        test = self._test_examples(task, group)
        start = time.perf_counter()
        for done in self._workdir.iterdir():  # the previous set's files, logged by now
            shutil.rmtree(done, ignore_errors=True)
        out = self._workdir / f"{group}--{name}"
        with torch_threads(self.threads if self._device().type == "cpu" else None):
            tokenizer, net = self._model()
            fit = None
            try:
                fit = self._fit(tokenizer, net, train, seed, metrics_callback)
                artifacts = self._save(fit.model, tokenizer, out) if self.log_weights else {}
                gen_start = time.perf_counter()
                with _autocast(fit.device, self._bf16()):
                    answers = generate(
                        fit.model,
                        tokenizer,
                        self._chat(tokenizer, test.prompts),
                        self.max_new_tokens,
                        self.eval_batch_size,
                        self.max_length,
                    )
                gen_seconds = time.perf_counter() - gen_start
            except BaseException:
                self._base = None  # a half-built adapter may sit in the base: reload next time
                raise
            finally:
                if fit is not None:
                    self._release(fit.model)
        metrics, rows = self._score(task, test, answers)
        metrics.update(fit.metrics)
        metrics["generate_seconds"] = gen_seconds
        metrics["train_seconds"] = time.perf_counter() - start
        (out / "eval").mkdir(parents=True, exist_ok=True)
        with open(out / "eval" / PREDICTIONS_FILE, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        artifacts["eval"] = out / "eval"
        params = {
            "n_train": len(train.prompts),
            "n_test": len(test.prompts),
            "base_model": self.model_name,
            "trainable_params": fit.trainable,
        }
        return GenerativeResult(
            metrics=metrics,
            params=params,
            device=str(fit.device),
            inputs=(train.frame, test.frame),
            artifacts=artifacts,
        )

    # -- data -----------------------------------------------------------------------------
    def _databases(self, task: Task) -> Databases:
        """`task.db_root` (the text2sql task), else a task folder's `databases/`."""
        root = getattr(task, "db_root", None)
        if root is not None or hasattr(task, "db_root"):
            return Databases(Path(root) if root else None, "task.db_root")
        folder = task.root / "databases"
        return Databases(folder if folder.is_dir() else None, f"{folder}")

    def _require_databases(self, task: Task, group: str, databases: Databases) -> None:
        where = "<db_root>/<db_id>/<db_id>.sqlite"
        if databases.root is None and databases.setting == "task.db_root":
            raise SynqueError(
                f"task.db_root: not set; task {task.name} is scored by execution accuracy, which "
                f"needs its SQLite databases (BIRD's layout: {where})"
            )
        if databases.root is None:
            raise SynqueError(
                f"train.metric=exec_accuracy: task folder {task.root} has no databases/ folder "
                "(databases/<db_id>/<db_id>.sqlite)"
            )
        if not databases.root.is_dir():
            raise SynqueError(f"{databases.setting}: {databases.root} is not a folder")

    def _use_execution(self, task: Task, test: Examples) -> bool:
        """Execution accuracy when asked, for text2sql, and wherever there are databases."""
        if self.metric != "auto":
            return self.metric == "exec_accuracy"
        return task.native_metric == "exec_accuracy" or bool(test.databases)

    def _records(self, task: Task, path: Path, limit: int | None) -> pl.DataFrame:
        frame = task.read_file(path)
        if frame.is_empty():
            raise SynqueError(f"{path}: empty set (no examples)")
        return frame.head(limit) if limit else frame

    def _render(self, task: Task, group: str, path: Path, limit: int | None) -> Examples:
        records = self._records(task, path, limit)
        self.template.check(records, path)
        databases = self._databases(task)
        prompts, completions, dbs = render_records(
            self.template, records, group, databases, self.schema_rows
        )
        if databases.root is None:
            dbs = []
        return Examples(
            prompts, completions, dbs, _lineage(task, path, records, prompts, completions)
        )

    def _examples(self, task: Task, group: str, name: str) -> Examples:
        return self._render(task, group, task.candidate_path(group, name), task.max_examples)

    def _test_examples(self, task: Task, group: str) -> Examples:
        """The labeled real test set of a group, rendered once per job."""
        if group not in self._tests:
            path = task.test_path(group)
            if path is None or not path.exists():
                raise SynqueError(
                    f"task {task.name}: no real test set for group '{group}' "
                    "(a task folder needs real/test with the completion field)"
                )
            self._tests[group] = self._render(task, group, path, self.max_test_examples)
        return self._tests[group]

    def _chat(self, tokenizer: Any, prompts: list[str]) -> list[list[int]]:
        return [
            encode_prompt(tokenizer, p, self.template.system, self.chat_template) for p in prompts
        ]

    # -- model ----------------------------------------------------------------------------
    def _device(self) -> Any:
        import torch

        if self.device_setting == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device_setting)

    def _bf16(self) -> bool:
        if self.precision == "auto":
            return self._device().type == "cuda"
        return self.precision == "bf16"

    def _model(self) -> tuple[Any, Any]:
        """(tokenizer, base model) on the device: kept for LoRA, loaded fresh for full FT."""
        import torch

        if self.lora and self._base is not None:
            return self._base
        # LoRA: a frozen bf16 base (adapters stay fp32); full FT: fp32 master weights
        dtype = torch.bfloat16 if self._bf16() and self.lora else torch.float32
        loaded = load_base(self.model_name, self.gguf_file, dtype)
        loaded[1].to(self._device())
        if self.lora:
            self._base = loaded
        return loaded

    def _release(self, model: Any) -> None:
        """Take the adapter out of the kept base (peft's `unload` restores its layers, whose
        weights training never touched), or let a fully fine-tuned model go."""
        if self.lora and self._base is not None and hasattr(model, "unload"):
            model.unload()

    def _fit(
        self,
        tokenizer: Any,
        net: Any,
        train: Examples,
        seed: int,
        metrics_callback: MetricsCallback | None,
    ) -> _Fit:
        import torch

        torch.manual_seed(seed)
        model = net
        if self.lora:
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(task_type="CAUSAL_LM", bias="none", **self.lora_settings)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning)
                model = get_peft_model(net, config)
        else:
            for param in model.parameters():
                param.requires_grad_(True)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if self.gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        sequences = encode_pairs(
            tokenizer,
            self._chat(tokenizer, train.prompts),
            train.completions,
            self.max_length,
        )
        losses, tokens, seconds = train_loop(
            model,
            sequences,
            pad_id=pad_token_id(tokenizer),
            seed=seed,
            epochs=self.epochs,
            max_steps=self.max_steps,
            batch_size=self.batch_size,
            grad_accum=self.grad_accum,
            optim=self.optim,
            bf16=self._bf16(),
            metrics_callback=metrics_callback,
        )
        if self.gradient_checkpointing:
            model.gradient_checkpointing_disable()
        model.eval()
        metrics = {
            "steps": float(len(losses)),
            "train_loss_first": losses[0],
            "train_loss_last": losses[-1],
            "train_tokens": float(tokens),
            "train_tokens_per_second": tokens / max(seconds, 1e-9),
            "n_truncated": float(sum(s.truncated for s in sequences)),
        }
        return _Fit(model, metrics, trainable, next(model.parameters()).device)

    def _save(self, model: Any, tokenizer: Any, out: Path) -> dict[str, Path]:
        """The adapter (or full model) + tokenizer + `synque_model.json` naming the base."""
        folder = out / ("adapter" if self.lora else "model")
        # the embeddings are frozen: never save them (peft would look for the base's config)
        extra = {"save_embedding_layers": False} if self.lora else {}
        model.save_pretrained(folder, **extra)
        tokenizer.save_pretrained(folder)
        meta = {
            "base_model": self.model_name,
            "gguf_file": self.gguf_file,
            "finetune": "lora" if self.lora else "full",
            "lora": self.lora_settings if self.lora else None,
            "chat_template": self.chat_template,
            "system": self.template.system,
            "prompt": self.template.prompt,
            "completion": self.template.completion,
        }
        (folder / MODEL_FILE).write_text(json.dumps(meta, indent=2))
        return {folder.name: folder}

    # -- scores ---------------------------------------------------------------------------
    def _score(
        self, task: Task, test: Examples, answers: list[str]
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Execution accuracy (with databases) or exact match, plus similarity; and rows."""
        golds = test.completions
        execution = self._use_execution(task, test)
        predicted = [extract_sql(a) for a in answers] if execution else [a.strip() for a in answers]
        exact = [exact_match(p, g) for p, g in zip(predicted, golds, strict=True)]
        similar = [similarity(p, g) for p, g in zip(predicted, golds, strict=True)]
        metrics = {
            "exact_match": sum(exact) / len(exact),
            "similarity": sum(similar) / len(similar),
        }
        rows = [
            {"gold": g, "predicted": p, "answer": a, "exact_match": e}
            for g, p, a, e in zip(golds, predicted, answers, exact, strict=True)
        ]
        if execution:
            before = (self.evaluator.queries, self.evaluator.seconds)
            items = list(zip(test.databases, predicted, golds, strict=True))
            verdicts = self.evaluator.judge_all(items)  # type: ignore[arg-type]
            metrics["exec_accuracy"] = execution_accuracy(verdicts)
            metrics["n_pred_errors"] = float(sum(v.error is not None for v in verdicts))
            metrics["n_timeouts"] = float(sum(v.error == "timeout" for v in verdicts))
            metrics["n_gold_errors"] = float(sum(v.gold_error is not None for v in verdicts))
            queries = self.evaluator.queries - before[0]
            metrics["eval_queries_per_second"] = queries / max(
                self.evaluator.seconds - before[1], 1e-9
            )
            for row, verdict in zip(rows, verdicts, strict=True):
                row.update(
                    correct=verdict.correct, error=verdict.error, gold_error=verdict.gold_error
                )
        chosen = (
            self.metric
            if self.metric != "auto"
            else ("exec_accuracy" if execution else "exact_match")
        )
        metrics["task_performance"] = metrics[chosen]
        return metrics, rows


def _autocast(device: Any, bf16: bool) -> Any:
    """bf16 autocast on `device` when asked (a no-op context otherwise)."""
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


@dataclass
class _Fit:
    model: Any
    metrics: dict[str, float]
    trainable: int
    device: Any


def _lineage(
    task: Task, path: Path, records: pl.DataFrame, prompts: list[str], completions: list[str]
) -> pl.DataFrame:
    """The task's own view of the set (same digest as other stages log) when its text template
    fits the records; else the prompts and completions themselves."""
    if all(f in records.columns for f in task.template.fields):
        return task.examples(path, records, None)
    return pl.DataFrame(
        {"text": prompts, "label": completions}, schema={"text": pl.String, "label": pl.String}
    )
