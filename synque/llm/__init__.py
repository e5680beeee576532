"""One interface over every LLM backend, with a crash-safe persistent response cache.

Why: the `rubric`, `lens` and `generate` stages must run unchanged on a CPU laptop
(`local`), on any OpenAI-compatible server (`openai`), on an in-process GPU engine (`vllm`)
or on recorded outputs (`replay`); and a judging job of many thousand calls that is killed
must resume without paying for a single finished call twice.

Layout: `base` (the `LLM` base class and request/reply types), `cache` (the response
cache and its keys), `images` (image parts in messages), `choices` (reading an answer
choice), one module per backend (`local`, `local_vlm`, `openai_compat`, `vllm_engine`,
`replay`) and `build` (`build_llm`).

Public API::

    build_llm(cfg, cache_dir) -> LLM
    LLM.complete(requests, progress=True) -> list[Completion]
    LLM.score_choices(messages, choices) -> list[float]
    LLM.score_choices_batch(messages_list, choices, progress=True) -> list[list[float]]
    LLM.stats / LLM.metrics() / LLM.record_invalid(n) / LLM.close()

`score_choices` per backend: `local` and `vllm` score every answer by its exact
log-likelihood as the assistant reply (softmax over summed token log-probs); `openai`
reads the server's `top_logprobs` and falls back to constrained generation with a one-hot
result when the server returns no log-probs; `replay` serves recorded probabilities. An
answer that matches no choice is counted in `stats.invalid_answers` and scored uniform.
"""

from synque.llm.base import LLM, ChatRequest, Completion, LLMStats, Message, text_messages
from synque.llm.build import (
    backend_keys,
    backends,
    build_llm,
    check_llm,
    check_llm_inputs,
    common_keys,
    llm_kind,
)
from synque.llm.cache import CACHE_FILE, ResponseCache, iter_cache_rows, lookup_key, request_key
from synque.llm.choices import choice_probs_from_logprobs, choice_schema, match_choice
from synque.llm.images import has_images, image_part, key_view
from synque.llm.local import LocalLLM, smollm2_gguf
from synque.llm.openai_compat import OpenAILLM
from synque.llm.replay import MissingRecordingError, ReplayLLM
from synque.llm.vllm_engine import VLLMLLM

#: Config keys per backend kind, and those every backend accepts (read off the classes).
BACKEND_KEYS = backend_keys()
COMMON_KEYS = common_keys()

__all__ = [
    "BACKEND_KEYS",
    "CACHE_FILE",
    "COMMON_KEYS",
    "ChatRequest",
    "Completion",
    "LLM",
    "LLMStats",
    "LocalLLM",
    "Message",
    "MissingRecordingError",
    "OpenAILLM",
    "ReplayLLM",
    "ResponseCache",
    "VLLMLLM",
    "backends",
    "build_llm",
    "check_llm",
    "check_llm_inputs",
    "choice_probs_from_logprobs",
    "choice_schema",
    "iter_cache_rows",
    "llm_kind",
    "has_images",
    "image_part",
    "key_view",
    "lookup_key",
    "match_choice",
    "request_key",
    "smollm2_gguf",
    "text_messages",
]
