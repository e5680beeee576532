"""Image parts in messages: keys follow the bytes, prompts place images, backends check inputs."""

from __future__ import annotations

import base64
import shutil
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image

from synque import SynqueError
from synque.lens import Rubric, judge_requests, load_prompts
from synque.lens.rubric import compile_rubric
from synque.llm import ResponseCache, check_llm_inputs, image_part, lookup_key, request_key
from synque.llm.images import data_url, fit, key_view, load_image, openai_messages
from tests.conftest import needs_smollm2
from tests.fakes.images import draw
from tests.fakes.judges import Counting


def _image(path: Path, label: int = 0, index: int = 0, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    draw(label, index, size).save(path)
    return path


def _ask(part: dict) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": "which?"}, part]}]


def test_keys_hash_the_bytes_not_the_path(tmp_path: Path) -> None:
    first = _image(tmp_path / "a" / "x.png")
    moved = tmp_path / "b" / "y.png"
    moved.parent.mkdir()
    shutil.copy(first, moved)
    edited = _image(tmp_path / "c" / "x.png", index=1)
    keys = [
        request_key("local", "m", "score", _ask(image_part(p)), {"choices": ["a", "b"]})
        for p in (first, moved, edited)
    ]
    assert keys[0] == keys[1] and keys[0] != keys[2]
    assert lookup_key("score", _ask(image_part(first))) == lookup_key(
        "score", _ask(image_part(moved))
    )
    # the bound changes the pixels a model sees, so it changes the key
    smaller = request_key("local", "m", "score", _ask(image_part(first, max_size=[8, 8])), {})
    assert smaller != request_key("local", "m", "score", _ask(image_part(first)), {})
    # messages without images enter the key unchanged (old caches keep hitting)
    text = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert key_view(text) == text


def test_a_moved_image_hits_the_response_cache(tmp_path: Path) -> None:
    first = _image(tmp_path / "a.png")
    cache = ResponseCache(tmp_path / "cache.sqlite")
    llm = Counting(cache)
    llm.score_choices(_ask(image_part(first)), ["yes", "no"])
    moved = tmp_path / "elsewhere" / "b.png"
    moved.parent.mkdir()
    first.rename(moved)
    llm.score_choices(_ask(image_part(moved)), ["yes", "no"])
    assert llm.made == 1 and llm.stats.cache_hits == 1


def test_fit_keeps_aspect_within_the_bound() -> None:
    wide = Image.new("RGB", (1000, 300))
    assert fit(wide, (224, 512)).size == (512, 154)
    tall = Image.new("RGB", (300, 600))
    assert fit(tall, (224, 512)).size == (224, 448)
    small = Image.new("RGB", (50, 40))
    assert fit(small, (224, 512)) is small


def test_openai_messages_carry_the_fitted_png(tmp_path: Path) -> None:
    path = _image(tmp_path / "big.png", size=600)
    part = image_part(path)
    sent = openai_messages(_ask(part))
    url = sent[0]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,") and url == data_url(part)
    decoded = Image.open(BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (224, 224)
    assert decoded.tobytes() == load_image(part).tobytes()
    assert sent[0]["content"][0] == {"type": "text", "text": "which?"}


def test_text_prompts_are_unchanged_and_images_take_the_example_slot(tmp_path: Path) -> None:
    rubric = Rubric(["alike"], ["S-vs-R"], ["R-vs-S"])
    prompts = load_prompts("default")
    items = judge_requests(rubric, prompts, ["a synthetic text"], ["a real text"])
    block = prompts.judge_rubric.format(
        data_description=prompts.data_description,
        example_name=prompts.example_name,
        sims="1. alike",
        diffs="1. R-vs-S",
    )
    example = prompts.judge_example.format(
        data_description=prompts.data_description,
        example_name=prompts.example_name,
        example="a synthetic text",
    )
    question = prompts.judge_question.format(
        data_description=prompts.data_description, example_name=prompts.example_name, target="A"
    )
    assert items[0].messages[1]["content"] == f"{block}\n\n{example}\n\n{question}"

    synth = [image_part(_image(tmp_path / f"s{i}.png", 0, i)) for i in range(2)]
    real = [image_part(_image(tmp_path / f"r{i}.png", 1, i)) for i in range(3)]
    items = judge_requests(rubric, load_prompts("images"), synth, real)
    assert len(items) == 4 * 5
    for item in items:
        content = item.messages[1]["content"]
        images = [p for p in content if p["type"] == "image"]
        assert len(images) == 1 and content[0]["type"] == "text" and content[-1]["type"] == "text"
        assert "dataset" in content[-1]["text"]
    shown = {items[k].messages[1]["content"][1]["sha256"] for k in range(0, 20, 2)}
    assert len(shown) == 5  # both questions about an image follow each other


def test_image_rubric_prompts_show_n_images_of_each_set(tmp_path: Path) -> None:
    synth = [image_part(_image(tmp_path / f"s{i}.png", 0, i)) for i in range(6)]
    real = [image_part(_image(tmp_path / f"r{i}.png", 1, i)) for i in range(6)]
    llm = ScriptedLists()
    compile_rubric(llm, load_prompts("images"), synth, real, n_samples=3, n_points=2)
    assert len(llm.seen) == 3
    for messages in llm.seen:
        content = messages[1]["content"]
        digests = [p["sha256"] for p in content if p["type"] == "image"]
        assert len(digests) == 6
        assert {d for d in digests[:3]} <= {p["sha256"] for p in synth}
        assert {d for d in digests[3:]} <= {p["sha256"] for p in real}
        assert "1. " in content[0]["text"] and content[-1]["text"].strip().endswith("else.")


class ScriptedLists(Counting):
    """Answers every rubric request with a two-point JSON list and remembers the messages."""

    kind = "scripted-lists"

    def __init__(self) -> None:
        super().__init__(None)
        self.seen: list[list[dict]] = []

    def _complete(self, requests, done) -> None:  # noqa: ANN001
        from synque.llm import Completion

        for j, req in enumerate(requests):
            self.seen.append(req.messages)
            done(j, Completion('["first point", "second point"]'))


def test_text_only_backends_refuse_image_tasks_before_any_run() -> None:
    with pytest.raises(SynqueError, match=r"^llm.model: the counting backend is text-only"):
        Counting.check_inputs({}, "image")
    Counting.check_inputs({}, "text")


@needs_smollm2
def test_local_text_model_on_images_names_llm_model() -> None:
    with pytest.raises(SynqueError) as err:
        check_llm_inputs({"kind": "local", "model": "smollm2"}, "image")
    assert str(err.value).startswith("llm.model: smollm2 is a text-only model")
    assert "\n" not in str(err.value)
    check_llm_inputs({"kind": "local", "model": "smollm2"}, "text")


def test_local_model_not_on_this_machine_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SynqueError) as err:
        check_llm_inputs({"kind": "local", "model": "nobody/no-such-vlm-here"}, "image")
    message = str(err.value)
    assert message.startswith("llm.model: nobody/no-such-vlm-here is not on this machine")
    assert "llm.model to a local model folder" in message and "\n" not in message
