"""LLM layer: the response cache, replay, and building backends from configs."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from pathlib import Path

import pytest

from synque import SynqueError
from synque.llm import (
    ChatRequest,
    LocalLLM,
    MissingRecordingError,
    OpenAILLM,
    ReplayLLM,
    ResponseCache,
    build_llm,
    lookup_key,
    request_key,
)
from tests.fakes.judges import Counting, user

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- cache


def test_cache_hits_across_instances_and_misses_on_params(tmp_path: Path) -> None:
    reqs = [ChatRequest(user(f"q{i}")) for i in range(3)]
    first = Counting(ResponseCache(tmp_path / "c.sqlite"))
    out1 = first.complete(reqs, progress=False)
    assert first.made == 3 and not any(c.cached for c in out1)
    first.close()

    second = Counting(ResponseCache(tmp_path / "c.sqlite"))
    out2 = second.complete(reqs, progress=False)
    assert second.made == 0 and all(c.cached for c in out2)
    assert [c.text for c in out2] == [c.text for c in out1]
    assert out2[0].prompt_tokens == 3
    assert second.stats.cache_hits == 3 and second.stats.calls == 0
    # other sampling params, choices, schema or model: all misses
    second.complete([ChatRequest(user("q0"), temperature=0.7)], progress=False)
    second.complete([ChatRequest(user("q0"), choices=["a", "b"])], progress=False)
    second.complete([ChatRequest(user("q0"), json_schema={"type": "object"})], progress=False)
    assert second.made == 3
    other_model = Counting(ResponseCache(tmp_path / "c.sqlite"), model="m2")
    other_model.complete(reqs[:1], progress=False)
    assert other_model.made == 1
    # scores are cached separately from completions; duplicates in a batch cost one call
    probs = second.score_choices_batch([user("q0"), user("q0")], ["a", "b"], progress=False)
    assert probs == [[0.5, 0.5], [0.5, 0.5]] and second.made == 4
    assert second.score_choices(user("q0"), ["a", "b"]) == [0.5, 0.5] and second.made == 4
    metrics = second.metrics()
    assert metrics["llm_cache_hits"] == 4 and metrics["llm_calls"] == 4
    assert set(metrics) >= {
        "llm_requests",
        "llm_prompt_tokens",
        "llm_completion_tokens",
        "llm_seconds",
        "llm_invalid_answers",
        "llm_retries",
    }


def test_cache_is_wal_and_shared_by_two_connections(tmp_path: Path) -> None:
    a, b = ResponseCache(tmp_path / "c.sqlite"), ResponseCache(tmp_path / "c.sqlite")
    a.put("k", {"text": "x"})
    assert b.get("k") == {"text": "x"} and len(b) == 1
    mode = sqlite3.connect(tmp_path / "c.sqlite").execute("PRAGMA journal_mode").fetchone()
    assert mode[0] == "wal"


# --------------------------------------------------------------------------- replay, factory


def test_replay_from_cache_and_jsonl(tmp_path: Path) -> None:
    recorder = Counting(ResponseCache(tmp_path / "rec.sqlite"))
    recorded = recorder.complete([ChatRequest(user("q1"), temperature=0.3)], progress=False)
    recorder.score_choices(user("q2"), ["a", "b"])
    recorder.close()
    replay = build_llm({"kind": "replay", "recordings": str(tmp_path / "rec.sqlite")}, None)
    assert isinstance(replay, ReplayLLM)
    assert replay.complete([ChatRequest(user("q1"))], progress=False)[0].text == (recorded[0].text)
    assert replay.score_choices(user("q2"), ["a", "b"]) == [0.5, 0.5]
    with pytest.raises(MissingRecordingError, match="no recorded complete .*'never asked'"):
        replay.complete([ChatRequest(user("never asked"))], progress=False)

    lines = [
        {"messages": user("j1"), "text": "from jsonl"},
        {"key": lookup_key("complete", user("j2")), "text": "by key"},
        {"messages": user("j3"), "choices": ["x", "y"], "probs": [0.25, 0.75]},
    ]
    path = tmp_path / "rec.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    replay = build_llm({"kind": "replay", "recordings": str(path)}, tmp_path)
    texts = replay.complete([ChatRequest(user("j1")), ChatRequest(user("j2"))], progress=False)
    assert [c.text for c in texts] == ["from jsonl", "by key"]
    assert replay.score_choices(user("j3"), ["x", "y"]) == [0.25, 0.75]
    with pytest.raises(MissingRecordingError):
        replay.score_choices(user("j1"), ["x", "y"])


def test_build_llm_errors(tmp_path: Path) -> None:
    with pytest.raises(SynqueError, match=r"^llm\.modle: unknown key; did you mean model\?$"):
        build_llm({"kind": "openai", "modle": "x"}, tmp_path)
    with pytest.raises(SynqueError, match="llm.kind must be one of"):
        build_llm({"kind": "gpt"}, tmp_path)
    with pytest.raises(SynqueError, match="recordings not found"):
        build_llm({"kind": "replay", "recordings": str(tmp_path / "none.sqlite")}, tmp_path)
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(SynqueError, match="llm=vllm needs the vllm package"):
            build_llm({"kind": "vllm", "model": "x"}, tmp_path)


def test_llm_config_typos_are_one_line_errors(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "configs/llm/openai.yaml")
    cfg.max_concurency = 4
    with pytest.raises(SynqueError) as info:
        build_llm(cfg, tmp_path)
    assert str(info.value) == "llm.max_concurency: unknown key; did you mean max_concurrency?"
    assert not (tmp_path / "llm_cache.sqlite").exists()  # checked before anything opens
    local = OmegaConf.load(ROOT / "configs/llm/local.yaml")
    local.prefix_reuce = False
    with pytest.raises(SynqueError, match=r"^llm\.prefix_reuce: unknown key; did you mean"):
        build_llm(local, tmp_path)
    # sampling temperature is per request (rubric.temperature, generate strategies), so a
    # backend has no such setting: the one-line error lists the settings it does have
    with pytest.raises(SynqueError) as info:
        build_llm({"kind": "openai", "model": "m", "temprature": 0.2}, tmp_path)
    message = str(info.value)
    assert message.startswith("llm.temprature: unknown key; known keys: ")
    assert "max_concurrency" in message and "\n" not in message
    with pytest.raises(SynqueError, match=r"^llm: missing setting model"):
        build_llm({"kind": "openai"}, tmp_path)
    with pytest.raises(SynqueError, match=r"^llm\.kind: 'local' does not match _target_"):
        build_llm(
            {"_target_": "synque.llm.openai_compat.OpenAILLM", "kind": "local", "model": "m"},
            tmp_path,
        )


def test_backend_kinds_are_read_off_the_classes() -> None:
    from synque.llm import VLLMLLM, backends, llm_kind

    assert backends() == {
        "local": LocalLLM,
        "openai": OpenAILLM,
        "replay": ReplayLLM,
        "vllm": VLLMLLM,
    }  # test fakes (kind "counting") are not backends
    assert llm_kind({"_target_": "synque.llm.replay.ReplayLLM", "recordings": "x"}) == "replay"
    assert llm_kind({"kind": "openai", "model": "m"}) == "openai"


def test_cache_keys_are_stable() -> None:
    """Existing caches must keep hitting: the key is the sha256 of this exact JSON."""
    import hashlib

    blob = (
        '{"choices":null,"json_schema":null,"kind":"openai","max_tokens":512,'
        '"messages":[{"content":"hi","role":"user"}],"model":"m","op":"complete","seed":null,'
        '"structured_output":"json_schema","temperature":0.0}'
    )
    params = {**ChatRequest(user("hi")).params(), "structured_output": "json_schema"}
    assert request_key("openai", "m", "complete", user("hi"), params) == (
        hashlib.sha256(blob.encode()).hexdigest()
    )
    lookup = '{"choices":["a","b"],"messages":[{"content":"hi","role":"user"}],"op":"score"}'
    assert (
        lookup_key("score", user("hi"), ["a", "b"]) == hashlib.sha256(lookup.encode()).hexdigest()
    )
    # list content (text and image parts) is keyed by its whole structure
    image = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "a.png"}},
            ],
        }
    ]
    other = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "b.png"}},
            ],
        }
    ]
    assert lookup_key("complete", image) != lookup_key("complete", other)


def test_text_only_backends_flatten_text_parts_and_refuse_images() -> None:
    from synque.llm import text_messages

    parts = [{"role": "user", "content": [{"type": "text", "text": "a"}, "b"]}]
    assert text_messages(parts) == [{"role": "user", "content": "a\nb"}]
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    with pytest.raises(SynqueError, match="text-only; a message carries image_url content"):
        text_messages(image)


def test_llm_configs_build_with_their_keys(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "configs/llm/openai.yaml")
    llm = build_llm(cfg, tmp_path)
    assert isinstance(llm, OpenAILLM) and llm.name == cfg.model
    for name in ("local", "vllm", "replay"):
        keys = set(OmegaConf.load(ROOT / f"configs/llm/{name}.yaml"))
        from synque.llm import BACKEND_KEYS, COMMON_KEYS

        assert keys <= BACKEND_KEYS[name] | COMMON_KEYS | {"judge"}, name
