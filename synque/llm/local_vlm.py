"""A Hugging Face image-text-to-text model in this process: the `local` backend for images.

Why a subclass of the text backend: scoring Likert answers is the same computation (exact
log-likelihood of each answer after the prompt, the prompt's KV cache shared by the
answers); only turning messages into model inputs differs. The processor expands each image
into its image tokens and pixels; the text backend's loop does the rest.

Prefix reuse with images: token ids cannot tell two images apart (every image becomes the
same placeholder tokens), so a prefix is only reused through an image when the previous
prompt showed the very same image (same digest), and never ends inside an image's tokens.
The judge prompts are ordered so both questions about one image follow each other: the
second reuses rubric and image and computes only the question. Models whose positions are
not one plain index per token (Qwen2-VL's multimodal rotary positions) are scored with one
full forward pass per answer instead, without reuse.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from synque.llm.base import ChatRequest, Completion, Message
from synque.llm.images import is_image_part, load_image
from synque.llm.local import KV, LocalLLM, Prompt

log = logging.getLogger(__name__)
#: Processor outputs that are not extra model inputs.
TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def _uses_multimodal_positions(config: Any) -> bool:
    """Whether a model positions image tokens on a grid (mrope), not one index per token."""
    text = getattr(config, "text_config", config)
    for name in ("rope_scaling", "rope_parameters"):
        rope = getattr(text, name, None)
        if isinstance(rope, Mapping) and "mrope_section" in rope:
            return True
    return False


def template_messages(messages: Sequence[Message]) -> tuple[list[dict[str, Any]], list[Any]]:
    """Messages for a VLM chat template (list content, `{"type": "image"}` parts) + images."""
    out, images = [], []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts: list[dict[str, Any]] = [{"type": "text", "text": content}]
        else:
            parts = []
            for part in content or []:
                if is_image_part(part):
                    parts.append({"type": "image"})
                    images.append(part)
                else:
                    parts.append(dict(part))
        out.append({"role": message["role"], "content": parts})
    return out, images


class LocalVLM(LocalLLM):
    """An image-text-to-text model (`AutoModelForImageTextToText` + `AutoProcessor`)."""

    def _load(self, source: str, gguf: str | None, dtype: Any) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(source)
        self.tokenizer = self.processor.tokenizer
        self.net = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype)
        token = getattr(self.processor, "image_token", None)
        image_id = getattr(self.net.config, "image_token_id", None)
        if image_id is None and token is not None:
            image_id = self.tokenizer.convert_tokens_to_ids(token)
        self.image_token_id = image_id
        self._positions_1d = not _uses_multimodal_positions(self.net.config)

    def __init__(self, model: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(model, *args, **kwargs)
        if not self._positions_1d:
            # Packed scoring and KV slicing assume one position index per token.
            self.prefix_reuse = False
            self._packed = False

    # -- model inputs
    def _prompt(self, messages: Sequence[Message]) -> Prompt:
        chat, parts = template_messages(messages)
        text = self.processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        images = [load_image(p) for p in parts]
        batch = self.processor(
            text=[text],
            images=[images] if images else None,
            return_tensors="pt",
            add_special_tokens=False,
        )
        inputs = {
            k: v.to(self.device) if hasattr(v, "to") else v
            for k, v in batch.items()
            if k not in TEXT_KEYS
        }
        if "pixel_values" in inputs and self.net.dtype.is_floating_point:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.net.dtype)
        return Prompt(
            batch["input_ids"][0].tolist(), inputs, tuple(str(p["sha256"]) for p in parts)
        )

    def encode_prompt(self, messages: Sequence[Message]) -> list[int]:
        return self._prompt(messages).ids

    def _image_span(self, ids: Sequence[int]) -> tuple[int, int] | None:
        """First and one-past-last position of image tokens in `ids` (None without images)."""
        where = [i for i, t in enumerate(ids) if t == self.image_token_id]
        return (where[0], where[-1] + 1) if where else None

    def _shared_prefix(self, prev: Prompt | None, cur: Prompt) -> int:
        shared = super()._shared_prefix(prev, cur)
        span = self._image_span(cur.ids)
        if not shared or span is None:
            return shared
        if prev is None or prev.images != cur.images or shared < span[1]:
            # other images behind the same tokens, or a cut inside this image: stop before it
            shared = min(shared, span[0])
        return shared if shared >= self.min_prefix_tokens else 0

    def _tail_inputs(self, cur: Prompt, shared: int) -> dict[str, Any]:
        span = self._image_span(cur.ids)
        return dict(cur.inputs) if span is not None and shared <= span[0] else {}

    def _batched_scores(
        self,
        suffix: Sequence[int],
        past: KV | None,
        start: int,
        choice_ids: list[list[int]],
        more: Mapping[str, Any] | None = None,
    ) -> tuple[KV, list[float]]:
        """As the text backend; for mrope models one plain forward pass per answer over
        prompt + answer (no KV reuse: `prefix_reuse` is off for them, so `suffix` is whole)."""
        if self._positions_1d:
            return super()._batched_scores(suffix, past, start, choice_ids, more)
        import torch

        ids = list(suffix)
        scores = []
        for c in choice_ids:
            seq = torch.tensor([ids + c[:-1]], device=self.device)
            out = self.net(input_ids=seq, attention_mask=torch.ones_like(seq), **(more or {}))
            logp = torch.log_softmax(out.logits[0, len(ids) - 1 :].float(), dim=-1)
            scores.append(sum(float(logp[j, t]) for j, t in enumerate(c)))
        return [], scores

    # -- generation (rubrics): one request at a time, pixels and all
    def _generate(
        self, batch: list[ChatRequest], temperature: float, max_tokens: int
    ) -> list[Completion]:
        import torch
        from transformers import GenerationConfig

        sample = temperature > 0
        config = GenerationConfig(
            max_new_tokens=max_tokens,
            do_sample=sample,
            pad_token_id=self._pad,
            eos_token_id=self.tokenizer.eos_token_id,
            **({"temperature": temperature, "top_p": 1.0, "top_k": 0} if sample else {}),
        )
        results = []
        for req in batch:
            prompt = self._prompt(req.messages)
            ids = torch.tensor([prompt.ids], device=self.device)
            torch.manual_seed(self.seed if req.seed is None else int(req.seed))
            with torch.inference_mode():
                out = self.net.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    generation_config=config,
                    **prompt.inputs,
                )
            new = out[0, len(prompt.ids) :].tolist()
            eos = self.tokenizer.eos_token_id
            if eos in new:
                new = new[: new.index(eos)]
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            results.append(Completion(text, len(prompt.ids), len(new)))
        return results
