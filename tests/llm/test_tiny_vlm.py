"""The tiny random VLM fixture: it reloads through the Auto classes, runs on an image, and
`transformers serve` answers an OpenAI `image_url` chat request with it. Random weights: only
the code path is checked, never what the model says."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import pytest

from tests.conftest import needs_smollm2
from tests.fakes.images import draw
from tests.fakes.vlm import TOKENS_PER_IMAGE, serve_vlm

pytestmark = needs_smollm2


def test_tiny_vlm_reloads_and_reads_an_image(tiny_vlm: Path) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_vlm)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm).eval()
    assert model.config.text_config.vocab_size == len(processor.tokenizer)
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "You judge images."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Red?"}]},
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    with_image = processor(text=text, images=[[draw(0, 0, size=32)]], return_tensors="pt")
    text_only = processor(text=text.replace("<image>", ""), return_tensors="pt")
    added = with_image["input_ids"].shape[1] - text_only["input_ids"].shape[1]
    assert added == TOKENS_PER_IMAGE
    with torch.no_grad():
        logits = model(**with_image).logits
    assert logits.shape[-1] == len(processor.tokenizer)
    assert math.isfinite(logits.abs().max().item())


def test_served_tiny_vlm_answers_an_image_url_request(tiny_vlm: Path) -> None:
    import openai

    buffer = io.BytesIO()
    draw(1, 0, size=32).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    with serve_vlm(tiny_vlm) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model=server.model,
            messages=[
                {"role": "system", "content": "You judge images."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Is this image red?"},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                },
            ],
            max_tokens=4,
            temperature=0,
        )
    content = reply.choices[0].message.content
    assert isinstance(content, str) and content.strip()
    assert reply.usage is not None and reply.usage.completion_tokens == 4


def test_openai_backend_sends_image_parts_to_the_served_vlm(tiny_vlm: Path, tmp_path: Path) -> None:
    from synque.lens import LIKERT
    from synque.llm import ChatRequest, OpenAILLM, ResponseCache, image_part
    from synque.llm.images import data_url

    path = tmp_path / "red.png"
    draw(0, 0, size=32).save(path)
    part = image_part(path)
    with_image = [{"role": "user", "content": [{"type": "text", "text": "Red?"}, part]}]
    text_only = [{"role": "user", "content": [{"type": "text", "text": "Red?"}]}]
    with serve_vlm(tiny_vlm) as server:
        llm = OpenAILLM(
            server.model,
            ResponseCache(tmp_path / "cache.sqlite"),
            base_url=server.base_url,
            max_retries=1,
        )
        probs = llm.score_choices_batch([with_image, text_only], LIKERT, progress=False)
        replies = llm.complete(
            [ChatRequest(m, max_tokens=3) for m in (with_image, text_only)], progress=False
        )
        llm.close()
    assert all(sum(p) == pytest.approx(1.0) for p in probs)
    assert not llm._logprobs_ok  # this server returns no logprobs: scored by generation
    # the image reached the model: its tokens are in the prompt the server counted
    assert replies[0].prompt_tokens - replies[1].prompt_tokens == TOKENS_PER_IMAGE
    assert llm.stats.request_bytes > 2 * len(data_url(part))
