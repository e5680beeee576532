"""The training core of `train.source=trained`, on a tiny separable sentiment problem (CPU).

Sentences are built from disjoint positive/negative adjective lists; the test set uses
adjectives, nouns and templates the training set never contains, so only a classifier that
learned sentiment (not memorised words) scores well on it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from synque.train.classifier import TrainResult, train_text_classifier

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"

POSITIVE = ["great", "excellent", "wonderful", "fantastic", "superb", "delightful"]
NEGATIVE = ["terrible", "awful", "horrible", "dreadful", "disgusting", "miserable"]
NOUNS = ["movie", "meal", "trip", "service", "concert", "hotel", "book", "game"]
TEMPLATES = ["The {noun} was {adj}.", "What a {adj} {noun}!", "I found the {noun} {adj}."]
TEST_POSITIVE = ["amazing", "brilliant", "lovely", "marvelous"]
TEST_NEGATIVE = ["atrocious", "appalling", "dismal", "nasty"]
TEST_NOUNS = ["restaurant", "show", "flight", "album"]
TEST_TEMPLATES = ["Honestly, this {noun} is {adj}.", "Our {noun} turned out {adj}."]


def _sentences(adjs: list[str], nouns: list[str], templates: list[str]) -> list[str]:
    return [t.format(adj=a, noun=n) for a in adjs for n in nouns for t in templates]


def _split(pos: list[str], neg: list[str], limit: int) -> tuple[list[str], list[str]]:
    """Balanced, shuffled (seeded) selection of `limit` sentences per class."""
    rng = random.Random(0)
    pairs = [(t, "pos") for t in rng.sample(pos, limit)]
    pairs += [(t, "neg") for t in rng.sample(neg, limit)]
    rng.shuffle(pairs)
    return [t for t, _ in pairs], [y for _, y in pairs]


TRAIN_TEXTS, TRAIN_LABELS = _split(
    _sentences(POSITIVE, NOUNS, TEMPLATES), _sentences(NEGATIVE, NOUNS, TEMPLATES), 50
)
TEST_TEXTS, TEST_LABELS = _split(
    _sentences(TEST_POSITIVE, TEST_NOUNS, TEST_TEMPLATES),
    _sentences(TEST_NEGATIVE, TEST_NOUNS, TEST_TEMPLATES),
    20,
)


def _cfg(name: str, **overrides: Any) -> dict[str, Any]:
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{name}.yaml"))
    assert isinstance(cfg, dict)
    return {**cfg, **overrides}


PROBE = {"max_epochs": 15}


def _run_probe(labels: list[str] | None = None, **kwargs: Any) -> TrainResult:
    return train_text_classifier(
        TRAIN_TEXTS,
        labels or TRAIN_LABELS,
        TEST_TEXTS,
        TEST_LABELS,
        _cfg("probe", **PROBE),
        seed=7,
        progress=False,
        **kwargs,
    )


@pytest.fixture(scope="module")
def probe_run() -> tuple[TrainResult, list[tuple[dict[str, float], int]]]:
    calls: list[tuple[dict[str, float], int]] = []
    result = _run_probe(metrics_callback=lambda m, step: calls.append((dict(m), step)))
    return result, calls


def test_toy_data_is_disjoint() -> None:
    assert not set(TRAIN_TEXTS) & set(TEST_TEXTS)
    assert sorted(set(TRAIN_LABELS)) == sorted(set(TEST_LABELS)) == ["neg", "pos"]


def test_probe_learns_and_beats_shuffled_labels(probe_run) -> None:
    result, _ = probe_run
    assert result.f1_macro > 0.8
    shuffled = list(TRAIN_LABELS)
    random.Random(1).shuffle(shuffled)
    control = _run_probe(shuffled)
    assert result.f1_macro > control.f1_macro + 0.15
    assert result.accuracy > control.accuracy


def test_probe_fields_are_consistent(probe_run) -> None:
    result, _ = probe_run
    assert result.n_train + result.n_val == len(TRAIN_TEXTS)
    assert result.n_val == 10  # 10% of 100, stratified
    assert result.n_test == len(TEST_TEXTS)
    assert set(result.per_class_f1) == {"neg", "pos"}
    assert 1 <= result.epochs <= PROBE["max_epochs"]
    assert 0.0 <= result.best_val_f1 <= 1.0
    assert result.device == "cpu"
    assert result.seconds > 0


def test_metrics_callback_once_per_epoch(probe_run) -> None:
    result, calls = probe_run
    assert [step for _, step in calls] == list(range(result.epochs))
    for metrics, _ in calls:
        assert set(metrics) == {"train_loss", "val_f1_macro", "val_accuracy"}
        assert 0.0 <= metrics["val_f1_macro"] <= 1.0
    assert max(m["val_f1_macro"] for m, _ in calls) == pytest.approx(result.best_val_f1)
    # the head is learning: loss falls from the first to the best epoch
    assert calls[-1][0]["train_loss"] < calls[0][0]["train_loss"]


def test_same_seed_same_result(probe_run) -> None:
    first, first_calls = probe_run
    calls: list[tuple[dict[str, float], int]] = []
    again = _run_probe(metrics_callback=lambda m, step: calls.append((dict(m), step)))
    assert again.f1_macro == first.f1_macro
    assert again.per_class_f1 == first.per_class_f1
    assert again.epochs == first.epochs
    assert calls == first_calls  # identical losses, epoch by epoch


def test_unseen_test_label_scores_zero() -> None:
    extra = ["The weather report was published on Tuesday.", "The meeting is at noon."]
    result = train_text_classifier(
        TRAIN_TEXTS,
        TRAIN_LABELS,
        TEST_TEXTS + extra,
        TEST_LABELS + ["neutral", "neutral"],
        _cfg("probe", max_epochs=3),
        seed=0,
        progress=False,
    )
    assert set(result.per_class_f1) == {"neg", "neutral", "pos"}
    assert result.per_class_f1["neutral"] == 0.0
    assert result.f1_macro == pytest.approx(sum(result.per_class_f1.values()) / 3)


def test_finetune_tiny_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    calls: list[int] = []
    result = train_text_classifier(
        TRAIN_TEXTS[:16],
        TRAIN_LABELS[:16],
        TEST_TEXTS[:8],
        TEST_LABELS[:8],
        _cfg("classifier", max_epochs=1, batch_size=8, max_length=16),
        seed=0,
        progress=False,
        metrics_callback=lambda m, step: calls.append(step),
    )
    assert result.n_train + result.n_val == 16
    assert result.n_val == 2
    assert result.n_test == 8
    assert result.epochs == 1 and calls == [0]
    assert 0.0 <= result.f1_macro <= 1.0 and 0.0 <= result.accuracy <= 1.0
    assert set(result.per_class_f1) == set(TEST_LABELS[:8]) | set(TRAIN_LABELS[:16])
    assert list(tmp_path.iterdir()) == []  # no checkpoints or logs left behind


def test_max_train_examples_caps_the_set() -> None:
    result = train_text_classifier(
        TRAIN_TEXTS,
        TRAIN_LABELS,
        TEST_TEXTS,
        TEST_LABELS,
        _cfg("probe", max_epochs=1, max_train_examples=40),
        seed=0,
        progress=False,
    )
    assert result.n_train + result.n_val == 40


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([], [], ["a"], ["x"]), "train_texts is empty"),
        ((["a", "b"], ["x", "y"], [], []), "test_texts is empty"),
        ((["a", "b"], ["x"], ["a"], ["x"]), "train: 2 texts but 1 labels"),
        ((["a", "b"], ["x", "y"], ["a"], ["x", "y"]), "test: 1 texts but 2 labels"),
        ((["a", "b"], ["x", "x"], ["a"], ["x"]), "at least 2"),
    ],
)
def test_bad_inputs_raise(args: tuple[list[str], ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train_text_classifier(*args, cfg=_cfg("probe"), seed=0, progress=False)


def test_bad_config_raises() -> None:
    with pytest.raises(ValueError, match="train.mode 'linear' unknown"):
        train_text_classifier(["a", "b"], ["x", "y"], ["a"], ["x"], {"mode": "linear"}, seed=0)
    with pytest.raises(ValueError, match="val_fraction"):
        train_text_classifier(["a", "b"], ["x", "y"], ["a"], ["x"], {"val_fraction": 1.5}, seed=0)
