"""vLLM's offline engine in this process, for GPU batch judging.

Free text and constrained choice go through `engine.chat` (structured outputs; prefix caching
shares the rubric across prompts). `score_choices` is exact: each prompt+choice is scored
with `prompt_logprobs` and softmaxed. Results are committed per chunk of `batch_size`
prompts, so a killed job loses at most one chunk.

Images: messages go to `engine.chat` in the OpenAI format (base64 PNG `image_url` parts),
so vLLM's own processor places the image tokens. A prompt with images is scored through
`engine.chat` too: each answer is written as the start of the assistant's reply
(`continue_final_message`) and its tokens, the last of the prompt, are read off the prompt
log-probs. (Written against vLLM's documented API; no GPU was available to run it here.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from synque import SynqueError
from synque.llm.base import (
    DEFAULT_MAX_INVALID_RATE,
    LLM,
    ChatRequest,
    Completion,
    Message,
    OnComplete,
    OnScore,
)
from synque.llm.cache import ResponseCache
from synque.llm.choices import softmax_probs
from synque.llm.images import has_images, openai_messages


class VLLMLLM(LLM):
    """A vLLM engine (`engine` holds the keyword arguments of `vllm.LLM`)."""

    kind = "vllm"
    sees_images = True  # when the served model is a VLM: vLLM says so at load time

    def __init__(
        self,
        model: str,
        cache: ResponseCache | None = None,
        *,
        batch_size: int = 512,
        seed: int = 0,
        append_eos: bool = True,
        engine: Mapping[str, Any] | None = None,
        name: str | None = None,
        max_invalid_rate: float = DEFAULT_MAX_INVALID_RATE,
    ) -> None:
        try:
            import vllm
        except ImportError as err:
            raise SynqueError(
                "llm=vllm needs the vllm package on a CUDA machine (pip install vllm); "
                "use llm=openai against a vLLM server or llm=local on CPU"
            ) from err
        super().__init__(model, cache, name, max_invalid_rate)
        self._vllm = vllm
        self.batch_size = max(1, int(batch_size))
        self.append_eos = append_eos
        self.engine = vllm.LLM(
            model=model, seed=seed, **{"enable_prefix_caching": True, **dict(engine or {})}
        )

    def _key_extra(self, op: str) -> dict[str, Any]:
        return {"append_eos": self.append_eos} if op == "score" else {}

    def _sampling(self, req: ChatRequest) -> Any:
        """SamplingParams with the request's choice/schema constraint (old and new vLLM)."""
        kwargs: dict[str, Any] = {"temperature": req.temperature, "max_tokens": req.max_tokens}
        if req.seed is not None:
            kwargs["seed"] = req.seed
        spec: dict[str, Any] = {}
        if req.choices is not None:
            spec = {"choice": list(req.choices)}
        elif req.json_schema is not None:
            spec = {"json": req.json_schema}
        if spec:
            try:
                from vllm.sampling_params import StructuredOutputsParams

                kwargs["structured_outputs"] = StructuredOutputsParams(**spec)
            except ImportError:  # vLLM < 0.11
                from vllm.sampling_params import GuidedDecodingParams

                kwargs["guided_decoding"] = GuidedDecodingParams(**spec)
        return self._vllm.SamplingParams(**kwargs)

    def _complete(self, requests: list[ChatRequest], done: OnComplete) -> None:
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            outputs = self.engine.chat(
                [openai_messages(r.messages) for r in chunk],
                [self._sampling(r) for r in chunk],
                use_tqdm=False,
            )
            for offset, out in enumerate(outputs):
                gen = out.outputs[0]
                done(
                    start + offset,
                    Completion(gen.text, len(out.prompt_token_ids or []), len(gen.token_ids)),
                )

    def _score_with_images(
        self, items: list[list[Message]], choices: list[str], end: str, lengths: list[int]
    ) -> list[list[float]]:
        """Each answer as the open assistant reply after an image prompt, via `engine.chat`."""
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        conversations = [
            [*openai_messages(messages), {"role": "assistant", "content": c + end}]
            for messages in items
            for c in choices
        ]
        outputs = self.engine.chat(
            conversations,
            params,
            use_tqdm=False,
            add_generation_prompt=False,
            continue_final_message=True,
        )
        scores = []
        for out, n in zip(outputs, lengths * len(items), strict=True):
            ids, plp = out.prompt_token_ids, out.prompt_logprobs
            scores.append(sum(plp[t][ids[t]].logprob for t in range(len(ids) - n, len(ids))))
        k = len(choices)
        return [scores[i * k : (i + 1) * k] for i in range(len(items))]

    def _score(self, items: list[list[Message]], choices: list[str], done: OnScore) -> None:
        tok = self.engine.get_tokenizer()
        end = tok.eos_token if self.append_eos and tok.eos_token else ""
        choice_ids = [tok(c + end, add_special_tokens=False)["input_ids"] for c in choices]
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        lengths = [len(c) for c in choice_ids]
        with_images = [j for j, m in enumerate(items) if has_images(m)]
        for start in range(0, len(with_images), self.batch_size):
            where = with_images[start : start + self.batch_size]
            chunk = [items[j] for j in where]
            for j, scores in zip(
                where, self._score_with_images(chunk, choices, end, lengths), strict=True
            ):
                done(j, softmax_probs(scores))
        items_text = [(j, m) for j, m in enumerate(items) if not has_images(m)]
        for start in range(0, len(items_text), self.batch_size):
            chunk = [m for _, m in items_text[start : start + self.batch_size]]
            where = [j for j, _ in items_text[start : start + self.batch_size]]
            prompts, spans = [], []
            for messages in chunk:
                text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                ids = tok(text, add_special_tokens=False)["input_ids"]
                for c in choice_ids:
                    prompts.append({"prompt_token_ids": ids + c})
                    spans.append((len(ids), ids + c))
            outputs = self.engine.generate(prompts, params, use_tqdm=False)
            for offset in range(len(chunk)):
                scores = []
                for k in range(len(choices)):
                    index = offset * len(choices) + k
                    begin, full = spans[index]
                    plp = outputs[index].prompt_logprobs
                    scores.append(sum(plp[t][full[t]].logprob for t in range(begin, len(full))))
                done(where[offset], softmax_probs(scores))
