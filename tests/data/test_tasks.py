"""Data layer: the paper's released layout and user task folders, including bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from synque import SynqueError
from synque.stages.common import load_task
from tests.conftest import needs_data
from tests.fakes.folders import make_folder


@needs_data
def test_sentiment_layout(make_cfg) -> None:
    task = load_task(make_cfg("task=sentiment"))
    assert task.groups() == ["all"]
    names = task.candidates("all")
    assert len(names) == 32
    synth = task.load_candidate("all", names[0])
    assert len(synth) == 999 and {"text", "label"} <= set(synth.columns)
    released = task.real_sample("all", 42)
    assert len(released) == 198
    fresh = task.real_sample("all", 1)
    assert len(fresh) == 198
    assert not fresh["text"].equals(released["text"])
    assert fresh["text"].equals(task.real_sample("all", 1)["text"])  # a seed is a seed
    assert len(task.real_test("all")) == 2388
    perf = task.recorded_performance()
    assert len(perf) == 32 and perf["task_performance"].is_between(0, 1).all()


@needs_data
def test_text2sql_web_image_layouts(make_cfg) -> None:
    t2s = load_task(make_cfg("task=text2sql"))
    assert t2s.groups() == ["app_store", "computer_student", "movie_platform"]
    assert len(t2s.candidates("app_store")) == 8
    assert "SQL: " in t2s.load_candidate("app_store", t2s.candidates("app_store")[0])["text"][0]
    assert len(t2s.real_sample("app_store", 42)) == 30
    assert len(t2s.real_sample("app_store", 7)) == 30
    assert len(t2s.recorded_performance()) == 24

    web = load_task(make_cfg("task=web"))
    assert len(web.groups()) == 13
    assert all(len(web.candidates(g)) == 5 for g in web.groups())
    perf = web.recorded_performance()
    assert len(perf) == 65
    assert set(perf["dataset"]) <= {n for g in web.groups() for n in web.candidates(g)}
    assert len(web.real_sample("amazon", 3)) == len(web.real_sample("amazon", 42))

    image = load_task(make_cfg("task=image"))
    assert image.groups() == ["first_split", "second_split", "third_split"]
    assert len(image.candidates("first_split")) == 6
    assert len(image.real_sample("first_split", 42)) == 100
    assert len(image.real_sample("first_split", 9)) == 100
    assert len(image.recorded_performance()) == 18


@needs_data
def test_released_rubric_and_judgments(make_cfg) -> None:
    task = load_task(make_cfg("task=text2sql"))
    name = task.candidates("app_store")[0]
    rubric = task.released_rubric("app_store", name, 42)
    assert set(rubric) == {"sims", "diffs_synth_from_real", "diffs_real_from_synth"}
    assert all(isinstance(p, str) for p in rubric["sims"])
    synth, real = task.released_judgments("app_store", name, 42, "qwen2.5-7b-instruct")
    assert len(synth) == len(task.load_candidate("app_store", name))
    assert len(real) == 30


def test_folder_task(make_cfg, tmp_path: Path) -> None:
    root = make_folder(tmp_path / "mytask")
    task = load_task(make_cfg("+experiment=folder_repr", f"task.root={root}"))
    assert task.name == "mytask"
    assert task.candidates("all") == ["set0", "set1", "set2"]
    assert len(task.load_candidate("all", "set1")) == 12
    assert len(task.real_sample("all", 5)) == 12
    assert len(task.recorded_performance()) == 3
    named = load_task(make_cfg("+experiment=folder_repr", f"task.root={root}", "task.name=other"))
    assert named.name == "other"


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("missing_folder", "not found"),
        ("bad_json", "malformed JSON at line 2"),
        ("missing_field", "has no field 'text'"),
        ("empty_set", "empty set"),
        ("pool_too_small", "fewer than the 50 asked"),
    ],
)
def test_folder_bad_input(make_cfg, tmp_path: Path, breakage: str, message: str) -> None:
    root = make_folder(tmp_path / "t")
    overrides = ["+experiment=folder_repr", f"task.root={root}"]
    if breakage == "missing_folder":
        overrides[-1] = f"task.root={tmp_path / 'nope'}"
    elif breakage == "bad_json":
        (root / "synthetic" / "set0.jsonl").write_text(
            '{"text": "ok", "label": 1}\n{"text": oops}\n'
        )
    elif breakage == "missing_field":
        (root / "synthetic" / "set0.jsonl").write_text('{"review": "ok", "label": 1}\n')
    elif breakage == "empty_set":
        (root / "synthetic" / "set0.jsonl").write_text("")
    elif breakage == "pool_too_small":
        overrides.append("task.real_sample_size=50")
    with pytest.raises(SynqueError, match=message) as info:
        task = load_task(make_cfg(*overrides))
        task.load_candidate("all", "set0")
        task.real_sample("all", 3)
    assert "\n" not in str(info.value)
    if breakage not in ("missing_folder", "pool_too_small"):
        assert "set0.jsonl" in str(info.value)
