"""The `local` backend with an image-text-to-text model (a tiny RANDOM one: its answers mean
nothing; these tests check the code path and that prefix reuse never changes a score)."""

from __future__ import annotations

from pathlib import Path

import pytest

from synque.lens import LIKERT, Rubric, judge_requests, load_prompts
from synque.llm import ChatRequest, LocalLLM, check_llm_inputs, image_part
from synque.llm.local_vlm import LocalVLM
from tests.fakes.images import draw


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    folder = tmp_path_factory.mktemp("judged")
    parts = []
    for i in range(3):
        path = folder / f"{i}.png"
        draw(i, i, size=24).save(path)
        parts.append(image_part(path))
    return parts


def _judge_prompts(parts: list[dict]) -> list[list[dict]]:
    rubric = Rubric(["Both show one object"], ["Brighter"], ["Darker"])
    items = judge_requests(rubric, load_prompts("images"), parts[:2], parts[2:])
    return [list(item.messages) for item in items]


def test_local_builds_a_vlm_for_an_image_model(tiny_vlm: Path) -> None:
    assert check_llm_inputs({"kind": "local", "model": str(tiny_vlm)}, "image").kind == "local"
    llm = LocalLLM(model=str(tiny_vlm), threads=1)
    assert isinstance(llm, LocalVLM) and llm.image_token_id is not None


def test_prefix_reuse_through_the_same_image_only(tiny_vlm: Path, images: list[dict]) -> None:
    prompts = _judge_prompts(images)
    reuse = LocalLLM(model=str(tiny_vlm), threads=1, min_prefix_tokens=4)
    plain = LocalLLM(model=str(tiny_vlm), threads=1, prefix_reuse=False)
    got = reuse.score_choices_batch(prompts, LIKERT, progress=False)
    want = plain.score_choices_batch(prompts, LIKERT, progress=False)
    for a, b in zip(got, want, strict=True):
        assert sum(a) == pytest.approx(1.0)
        assert a == pytest.approx(b, abs=1e-4)
    assert plain.reused_tokens == 0 and reuse.reused_tokens > 0
    # the second question about an image reuses rubric AND image; a new image only the rubric
    first, second, third = (reuse._prompt(p) for p in prompts[:3])
    span = reuse._image_span(first.ids)
    assert span is not None
    assert reuse._shared_prefix(first, second) > span[1]
    assert reuse._shared_prefix(second, third) <= span[0]
    assert reuse._tail_inputs(third, reuse._shared_prefix(second, third))  # pixels sent again


def test_every_scoring_path_gives_the_same_scores(tiny_vlm: Path, images: list[dict]) -> None:
    prompts = _judge_prompts(images)[:4]
    packed = LocalLLM(model=str(tiny_vlm), threads=1)
    batched = LocalLLM(model=str(tiny_vlm), threads=1)
    batched._packed = False
    a = packed.score_choices_batch(prompts, LIKERT, progress=False)
    b = batched.score_choices_batch(prompts, LIKERT, progress=False)
    # the path of models with multimodal positions (Qwen2-VL): a plain pass per answer
    plain = LocalLLM(model=str(tiny_vlm), threads=1, prefix_reuse=False)
    plain._positions_1d, plain._packed = False, False
    c = plain.score_choices_batch(prompts, LIKERT, progress=False)
    assert packed._packed  # the one-pass tree-mask path ran (it falls back on errors)
    for x, y, z in zip(a, b, c, strict=True):
        assert x == pytest.approx(y, abs=1e-4) and x == pytest.approx(z, abs=1e-4)


def test_generates_from_a_prompt_with_images(tiny_vlm: Path, images: list[dict]) -> None:
    llm = LocalLLM(model=str(tiny_vlm), threads=1)
    content = [
        {"type": "text", "text": "Set S:\n1. "},
        images[0],
        {"type": "text", "text": "\n2. "},
        images[1],
        {"type": "text", "text": "\nList what they share."},
    ]
    request = ChatRequest([{"role": "user", "content": content}], max_tokens=6)
    reply = llm.complete([request], progress=False)[0]
    assert isinstance(reply.text, str) and reply.completion_tokens == 6
    assert reply.prompt_tokens > 2 * 7  # both images' tokens were in the prompt
