"""The text classifier trainer (`train=classifier`, `train=probe`) on a tiny sentiment problem.

Sentences are built from disjoint positive/negative adjective lists; the test set uses
adjectives, nouns and templates the training set never contains, so only a classifier that
learned sentiment (not memorised words) scores well on it.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from synque import SynqueError
from synque.components import build
from synque.train.base import TrainResult
from synque.train.classifier import TextClassifier

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

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
TRAIN = pl.DataFrame({"text": TRAIN_TEXTS, "label": TRAIN_LABELS})
TEST = pl.DataFrame({"text": TEST_TEXTS, "label": TEST_LABELS})


PROBE = {"max_epochs": 15}


def per_class_f1(result: TrainResult) -> dict[str, float]:
    return {k[3:]: v for k, v in result.metrics.items() if k.startswith("f1.")}


def _frame(texts: list[str], labels: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"text": texts, "label": labels})


@pytest.fixture(scope="module")
def run_probe(make_trainer: Callable[..., Any]) -> Callable[..., TrainResult]:
    def _run(labels: list[str] | None = None, **kwargs: Any) -> TrainResult:
        train = TRAIN if labels is None else _frame(TRAIN_TEXTS, labels)
        return make_trainer("probe", **PROBE).fit_evaluate(train, TEST, seed=7, **kwargs)

    return _run


@pytest.fixture(scope="module")
def probe_run(run_probe) -> tuple[TrainResult, list[tuple[dict[str, float], int]]]:
    calls: list[tuple[dict[str, float], int]] = []
    result = run_probe(metrics_callback=lambda m, step: calls.append((dict(m), step)))
    return result, calls


def test_toy_data_is_disjoint() -> None:
    assert not set(TRAIN_TEXTS) & set(TEST_TEXTS)
    assert sorted(set(TRAIN_LABELS)) == sorted(set(TEST_LABELS)) == ["neg", "pos"]


def test_probe_config_inherits_the_classifier_config(train_config) -> None:
    probe, classifier = train_config("probe"), train_config("classifier")
    assert probe["_target_"] == classifier["_target_"]
    assert (probe["mode"], classifier["mode"]) == ("probe", "finetune")
    assert probe["backbone"] == classifier["backbone"] and probe["lr"] > classifier["lr"]


def test_probe_learns_and_beats_shuffled_labels(probe_run, run_probe) -> None:
    result, _ = probe_run
    assert result.metrics["f1_macro"] > 0.8
    assert result.task_performance == result.metrics["f1_macro"]
    shuffled = list(TRAIN_LABELS)
    random.Random(1).shuffle(shuffled)
    control = run_probe(shuffled)
    assert result.metrics["f1_macro"] > control.metrics["f1_macro"] + 0.15
    assert result.metrics["accuracy"] > control.metrics["accuracy"]


def test_probe_fields_are_consistent(probe_run) -> None:
    result, _ = probe_run
    assert result.params["n_train"] + result.params["n_val"] == len(TRAIN_TEXTS)
    assert result.params["n_val"] == 10  # 10% of 100, stratified
    assert result.params["n_test"] == len(TEST_TEXTS)
    assert set(per_class_f1(result)) == {"neg", "pos"}
    assert 1 <= result.metrics["epochs"] <= PROBE["max_epochs"]
    assert 0.0 <= result.metrics["best_val_f1"] <= 1.0
    assert result.device == "cpu"
    assert result.metrics["train_seconds"] > 0


def test_metrics_callback_once_per_epoch(probe_run) -> None:
    result, calls = probe_run
    assert [step for _, step in calls] == list(range(int(result.metrics["epochs"])))
    for metrics, _ in calls:
        assert set(metrics) == {"train_loss", "val_f1_macro", "val_accuracy"}
        assert 0.0 <= metrics["val_f1_macro"] <= 1.0
    best = max(m["val_f1_macro"] for m, _ in calls)
    assert best == pytest.approx(result.metrics["best_val_f1"])
    # the head is learning: loss falls from the first to the best epoch
    assert calls[-1][0]["train_loss"] < calls[0][0]["train_loss"]


def test_same_seed_same_result(probe_run, run_probe) -> None:
    first, first_calls = probe_run
    calls: list[tuple[dict[str, float], int]] = []
    again = run_probe(metrics_callback=lambda m, step: calls.append((dict(m), step)))
    assert again.metrics["f1_macro"] == first.metrics["f1_macro"]
    assert per_class_f1(again) == per_class_f1(first)
    assert again.metrics["epochs"] == first.metrics["epochs"]
    assert calls == first_calls  # identical losses, epoch by epoch


def test_unseen_test_label_scores_zero(make_trainer) -> None:
    extra = ["The weather report was published on Tuesday.", "The meeting is at noon."]
    test = _frame(TEST_TEXTS + extra, TEST_LABELS + ["neutral", "neutral"])
    result = make_trainer("probe", max_epochs=3).fit_evaluate(TRAIN, test, seed=0)
    f1 = per_class_f1(result)
    assert set(f1) == {"neg", "neutral", "pos"}
    assert f1["neutral"] == 0.0
    assert result.metrics["f1_macro"] == pytest.approx(sum(f1.values()) / 3)


def test_finetune_tiny_runs_end_to_end(
    make_trainer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    calls: list[int] = []
    trainer = make_trainer("classifier", max_epochs=1, batch_size=8, max_length=16)
    result = trainer.fit_evaluate(
        TRAIN.head(16),
        TEST.head(8),
        seed=0,
        metrics_callback=lambda m, step: calls.append(step),
    )
    assert result.params["n_train"] + result.params["n_val"] == 16
    assert result.params["n_val"] == 2
    assert result.params["n_test"] == 8
    assert result.metrics["epochs"] == 1 and calls == [0]
    assert 0.0 <= result.metrics["f1_macro"] <= 1.0 and 0.0 <= result.metrics["accuracy"] <= 1.0
    assert set(per_class_f1(result)) == set(TEST_LABELS[:8]) | set(TRAIN_LABELS[:16])
    assert list(tmp_path.iterdir()) == []  # no checkpoints or logs left behind


def test_max_train_examples_caps_the_set(make_trainer) -> None:
    trainer = make_trainer("probe", max_epochs=1, max_train_examples=40)
    result = trainer.fit_evaluate(TRAIN, TEST, seed=0)
    assert result.params["n_train"] + result.params["n_val"] == 40


@pytest.mark.parametrize(
    ("train", "test", "message"),
    [
        (_frame([], []), _frame(["a"], ["x"]), "the training set is empty"),
        (_frame(["a", "b"], ["x", "y"]), _frame([], []), "the test set is empty"),
        (pl.DataFrame({"text": ["a", "b"]}), _frame(["a"], ["x"]), "training set has no 'label'"),
        (_frame(["a", "b"], ["x", "y"]), pl.DataFrame({"label": ["x"]}), "test set has no 'text'"),
        (_frame(["a", "b"], ["x", "x"]), _frame(["a"], ["x"]), "at least 2"),
    ],
)
def test_bad_inputs_raise(make_trainer, train: pl.DataFrame, test: pl.DataFrame, message: str):
    with pytest.raises(SynqueError, match=message):
        make_trainer("probe").fit_evaluate(train, test, seed=0)


def test_bad_config_raises(train_config) -> None:
    with pytest.raises(SynqueError, match="train.mode='linear': unknown"):
        build(train_config("probe", mode="linear"), "train")
    with pytest.raises(SynqueError, match="train.val_fraction=1.5"):
        build(train_config("probe", val_fraction=1.5), "train")


def test_misspelt_setting_is_one_line_did_you_mean(train_config) -> None:
    with pytest.raises(SynqueError) as caught:
        build(train_config("classifier", patiense=3), "train")
    assert str(caught.value) == "train.patiense: unknown key; did you mean patience?"
    # too far from any key for difflib: still one line naming the key, with `lr` among the
    # known keys (components.unknown_key_error decides between a guess and the list)
    with pytest.raises(SynqueError) as caught:
        build(train_config("classifier", lr_rate=0.1), "train")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("train.lr_rate: unknown key; ")
    assert "lr" in message.split("; ", 1)[1].replace("?", "").replace(",", "").split()


def test_defaults_live_in_the_config_only(train_config) -> None:
    """Every constructor setting is required: a key left out of the YAML is an error."""
    cfg = train_config("classifier")
    del cfg["patience"]
    with pytest.raises(SynqueError, match="missing setting patience"):
        build(cfg, "train")
    assert isinstance(build(train_config("classifier"), "train"), TextClassifier)
