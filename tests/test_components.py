"""One way to build a component: `_target_`, a signature check, one-line "did you mean"."""

from __future__ import annotations

import pytest
from omegaconf import open_dict

from synque import SynqueError
from synque.components import build, check_component, check_groups


class Widget:
    config_keys = ("mode",)

    def __init__(self, size: int, temperature: float = 1.0) -> None:
        self.size, self.temperature = size, temperature


class Gadget(Widget):
    def __init__(self, colour: str = "red", **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.colour = colour


TARGET = f"{__name__}.Widget"


def test_build_instantiates_with_runtime_arguments_and_skips_config_keys() -> None:
    widget = build({"_target_": TARGET, "temperature": 0.5, "mode": "x", "kind": "k"}, "w", size=3)
    assert (widget.size, widget.temperature) == (3, 0.5)


def test_typo_gets_one_line_did_you_mean() -> None:
    with pytest.raises(SynqueError) as info:
        check_component({"_target_": TARGET, "size": 1, "temprature": 0.5}, "llm")
    assert str(info.value) == "llm.temprature: unknown key; did you mean temperature?"


def test_subclass_forwarding_kwargs_accepts_base_keys_and_rejects_typos() -> None:
    target = f"{__name__}.Gadget"
    assert build({"_target_": target, "size": 2, "colour": "blue"}, "g").size == 2
    with pytest.raises(SynqueError, match=r"^g\.sise: unknown key; did you mean size\?$"):
        check_component({"_target_": target, "sise": 2}, "g")


def test_missing_required_setting_and_bad_target_are_one_line() -> None:
    with pytest.raises(SynqueError, match="missing setting size"):
        build({"_target_": TARGET}, "w")
    with pytest.raises(SynqueError, match=r"^w\._target_: cannot import no\.such\.Thing"):
        build({"_target_": "no.such.Thing"}, "w")


@pytest.mark.parametrize(
    ("experiment", "group", "typo", "suggestion"),
    [
        ("sentiment_repr", "task", "max_exampels", "max_examples"),
        ("sentiment_repr", "embedder", "batch_sise", "batch_size"),
        ("sentiment_lens", "llm", "prefix_reuce", "prefix_reuse"),
        ("sentiment_train", "train", "max_epoch", "max_epochs"),
    ],
)
def test_every_component_group_answers_a_typo(
    make_cfg, experiment: str, group: str, typo: str, suggestion: str
) -> None:
    cfg = make_cfg(f"+experiment={experiment}")
    with open_dict(cfg):
        cfg[group][typo] = 1
    with pytest.raises(SynqueError) as info:
        check_groups(cfg, [group])
    assert str(info.value) == f"{group}.{typo}: unknown key; did you mean {suggestion}?"


def test_cli_typo_exits_with_one_line(cli) -> None:
    proc = cli("+experiment=sentiment_repr", "+embedder.batch_sise=3", check=False)
    assert proc.returncode == 2  # a command-line mistake
    assert (
        "synque: error: embedder.batch_sise: unknown key; did you mean batch_size?" in proc.stderr
    )
    assert "Traceback" not in proc.stderr
