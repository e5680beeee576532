"""Causal-LM building blocks of generative training: tokens, batches, the loop, generation.

Why apart from `lora.py`: the trainer decides what to train and how to score it; these are
the model-level steps any generative trainer reuses (prompt and completion tokens with the
loss on the completion only, length-sorted batches, the learning-rate schedule, the
accumulating training loop, batched greedy generation, loading a base model or a logged
adapter).
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synque import SynqueError
from synque.train.base import MetricsCallback

log = logging.getLogger(__name__)

#: What a logged adapter (or model) folder says about its base model.
MODEL_FILE = "synque_model.json"


@dataclass(frozen=True)
class TrainSequence:
    """One training sequence: token ids, how many lead tokens are prompt, whether cut."""

    ids: list[int]
    n_prompt: int
    truncated: bool


# -- tokens -------------------------------------------------------------------------------
def pad_token_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    return int(pad if pad is not None else (tokenizer.eos_token_id or 0))


def encode_prompt(tokenizer: Any, prompt: str, system: str | None, chat: bool) -> list[int]:
    """Token ids of a prompt, ending where the model's answer starts (chat template or not)."""
    if not chat:
        return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_pairs(
    tokenizer: Any, prompts: list[list[int]], completions: list[str], max_length: int
) -> list[TrainSequence]:
    """Prompt ids + completion ids + end of turn, at most `max_length` tokens.

    Too long: the completion keeps at most half the budget (cut at its end), the prompt keeps
    its LAST tokens (the question sits at the end of the prompt; its schema's start goes).
    """
    eos = tokenizer.eos_token_id
    out = []
    for prompt, completion in zip(prompts, completions, strict=True):
        answer = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
        answer = answer + ([eos] if eos is not None else [])
        truncated = len(prompt) + len(answer) > max_length
        if truncated:
            answer = answer[: max(max_length // 2, max_length - len(prompt))]
            prompt = prompt[len(prompt) - (max_length - len(answer)) :]
        out.append(TrainSequence(prompt + answer, len(prompt), truncated))
    return out


def batches(
    sequences: list[TrainSequence], batch_size: int, pad_id: int, order: list[int]
) -> Iterator[dict[str, Any]]:
    """Right-padded micro-batches in `order`; labels are -100 on prompt and padding."""
    import torch

    for lo in range(0, len(order), batch_size):
        chunk = [sequences[i] for i in order[lo : lo + batch_size]]
        width = max(len(s.ids) for s in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        for row, seq in enumerate(chunk):
            n = len(seq.ids)
            ids[row, :n] = torch.tensor(seq.ids)
            mask[row, :n] = 1
            labels[row, seq.n_prompt : n] = torch.tensor(seq.ids[seq.n_prompt :])
        yield {"input_ids": ids, "attention_mask": mask, "labels": labels}


def lr_factor(schedule: str, warmup: int, total: int) -> Any:
    """Multiplier of the learning rate at optimizer step `step` (0-based)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if schedule == "constant":
            return 1.0
        done = (step - warmup) / max(total - warmup, 1)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * done))
        return max(0.0, 1.0 - done)

    return factor


def train_loop(
    model: Any,
    sequences: list[TrainSequence],
    *,
    pad_id: int,
    seed: int,
    epochs: int,
    max_steps: int | None,
    batch_size: int,
    grad_accum: int,
    optim: dict[str, Any],
    bf16: bool,
    metrics_callback: MetricsCallback | None = None,
) -> tuple[list[float], int, float]:
    """AdamW over shuffled micro-batches, `grad_accum` of them per optimizer step.

    Returns (mean completion-token loss per step, tokens processed, seconds). The loss of a
    step is the sum over its completion tokens divided by their number, whatever the padding
    and the split into micro-batches (`num_items_in_batch`).
    """
    import torch

    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": optim["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=optim["lr"],
    )
    per_epoch = math.ceil(math.ceil(len(sequences) / batch_size) / grad_accum)
    total = per_epoch * epochs if max_steps is None else min(per_epoch * epochs, max_steps)
    warmup = int(optim["warmup_ratio"] * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(optim["schedule"], warmup, total)
    )
    generator = torch.Generator().manual_seed(seed)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    model.train()
    if hasattr(model, "config"):
        model.config.use_cache = False
    losses: list[float] = []
    tokens = 0
    start = time.perf_counter()
    for _epoch in range(epochs):
        order = torch.randperm(len(sequences), generator=generator).tolist()
        micro = list(batches(sequences, batch_size, pad_id, order))
        for lo in range(0, len(micro), grad_accum):
            if len(losses) >= total:
                break
            group = micro[lo : lo + grad_accum]
            n_items = sum(int((b["labels"][:, 1:] != -100).sum()) for b in group)
            step_loss = 0.0
            for batch in group:
                batch = {k: v.to(device) for k, v in batch.items()}
                with autocast:
                    out = model(**batch, num_items_in_batch=torch.tensor(n_items, device=device))
                out.loss.backward()
                step_loss += float(out.loss.detach())
                tokens += int(batch["attention_mask"].sum())
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            lr = scheduler.get_last_lr()[0]  # the rate this step uses
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
            if metrics_callback is not None:
                metrics_callback({"train_loss": step_loss, "lr": lr}, len(losses) - 1)
    if hasattr(model, "config"):
        model.config.use_cache = True
    return losses, tokens, time.perf_counter() - start


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int,
    max_prompt: int,
) -> list[str]:
    """Greedy answers to tokenized prompts, in left-padded batches of similar length.

    Prompts longer than `max_prompt` keep their last tokens. Sorting by length first keeps the
    padding (wasted compute) small; the answers come back in the prompts' order.
    """
    import torch
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    pad = pad_token_id(tokenizer)
    eos = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos |= set(configured if isinstance(configured, list) else [configured])
    eos.discard(None)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        repetition_penalty=1.0,
        pad_token_id=pad,
        eos_token_id=sorted(eos),
    )
    prompts = [p[-max_prompt:] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: dict[int, str] = {}
    model.eval()
    for lo in range(0, len(order), batch_size):
        idx = order[lo : lo + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in idx])
        mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in idx])
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*generation flags are not valid.*")
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                generation_config=config,
            )
        for i, row in zip(idx, out[:, width:].tolist(), strict=True):
            cut = next((k for k, t in enumerate(row) if t in eos), len(row))
            answers[i] = tokenizer.decode(row[:cut], skip_special_tokens=True)
    return [answers[i] for i in range(len(prompts))]


# -- loading ------------------------------------------------------------------------------
def check_model(model: str, gguf_file: str | None) -> None:
    """Stop in one line, before any run opens, when the base model is not on this machine."""
    from synque.llm.local import model_config, smollm2_gguf

    if model == "smollm2":
        smollm2_gguf()
    elif not gguf_file:
        try:
            model_config(model)
        except SynqueError as err:
            raise SynqueError(str(err).replace("llm.model", "train.model")) from None


def load_base(model: str, gguf_file: str | None, dtype: Any) -> tuple[Any, Any]:
    """(tokenizer, causal LM) of a model name or folder; `smollm2` = the packaged GGUF."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from synque.llm.gguf_cache import load_gguf
    from synque.llm.local import smollm2_gguf

    source, gguf = model, gguf_file
    if model == "smollm2":
        path = smollm2_gguf()
        source, gguf = str(path.parent), path.name
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        if gguf:
            from transformers import GgufConfig

            # unpacked into plain Linear layers: trainable by peft, and savable after full
            # fine-tuning (a model that keeps GGUF blocks is neither); converted once into a
            # plain folder that later loads read (synque.llm.gguf_cache)
            dequantized = GgufConfig(dequantize=True)
            tokenizer, net = load_gguf(source, gguf, dtype, quantization_config=dequantized)
        else:
            tokenizer = AutoTokenizer.from_pretrained(source)
            net = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return tokenizer, net


def load_trained(folder: str | Path, device: str = "cpu") -> tuple[Any, Any]:
    """(tokenizer, model) of a logged `adapter/` or `model/` folder (its base named inside)."""
    import torch

    folder = Path(folder)
    meta_file = folder / MODEL_FILE
    if not meta_file.is_file():
        raise SynqueError(f"{folder}: no {MODEL_FILE} (not an artifact of train=lora)")
    meta = json.loads(meta_file.read_text())
    if meta["finetune"] == "full":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        net = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        return tokenizer, net.to(device).eval()
    from peft import PeftModel

    tokenizer, base = load_base(meta["base_model"], meta.get("gguf_file"), torch.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # peft vs transformers 5
        model = PeftModel.from_pretrained(base, folder)
    return tokenizer, model.to(device).eval()
