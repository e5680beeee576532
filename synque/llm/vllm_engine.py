"""vLLM's offline engine in this process, for GPU batch judging.

Free text and constrained choice go through `engine.chat` (structured outputs; prefix caching
shares the rubric across prompts). `score_choices` is exact: each prompt+choice is scored
with `prompt_logprobs` and softmaxed. Results are committed per chunk of `batch_size`
prompts, so a killed job loses at most one chunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from synque import SynqueError
from synque.llm.base import LLM, ChatRequest, Completion, Message, OnComplete, OnScore
from synque.llm.cache import ResponseCache
from synque.llm.choices import softmax_probs


class VLLMLLM(LLM):
    """A vLLM engine (`engine` holds the keyword arguments of `vllm.LLM`)."""

    kind = "vllm"

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
    ) -> None:
        try:
            import vllm
        except ImportError as err:
            raise SynqueError(
                "llm=vllm needs the vllm package on a CUDA machine (pip install vllm); "
                "use llm=openai against a vLLM server or llm=local on CPU"
            ) from err
        super().__init__(model, cache, name)
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
                [r.messages for r in chunk], [self._sampling(r) for r in chunk], use_tqdm=False
            )
            for offset, out in enumerate(outputs):
                gen = out.outputs[0]
                done(
                    start + offset,
                    Completion(gen.text, len(out.prompt_token_ids or []), len(gen.token_ids)),
                )

    def _score(self, items: list[list[Message]], choices: list[str], done: OnScore) -> None:
        tok = self.engine.get_tokenizer()
        end = tok.eos_token if self.append_eos and tok.eos_token else ""
        choice_ids = [tok(c + end, add_special_tokens=False)["input_ids"] for c in choices]
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
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
                done(start + offset, softmax_probs(scores))
