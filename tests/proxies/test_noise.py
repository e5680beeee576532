"""Proxy noise: `noise_seeds` repeats MAUVE (k-means seed) and PAD (split seed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from synque import SynqueError
from synque.proxies import PROXIES, check_proxy_config, compute_proxy
from synque.proxies.registry import compute_proxy_repeats
from synque.stages.repr import score_set

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "proxy"


def _pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(60, 6)), rng.normal(0.3, 1.0, size=(40, 6))


def test_one_noise_seed_is_exactly_todays_value() -> None:
    synth, real = _pair()
    for name, opts in (("pad", {}), ("mauve", {"num_buckets": 4})):
        want = compute_proxy(name, synth, real, opts, seed=44)
        assert compute_proxy_repeats(name, synth, real, opts, seed=44) == [want]
        assert compute_proxy_repeats(name, synth, real, {**opts, "noise_seeds": 1}, seed=44) == [
            want
        ]


def test_repeats_count_up_the_noise_seed() -> None:
    synth, real = _pair(1)
    pads = compute_proxy_repeats("pad", synth, real, {"noise_seeds": 3, "split_seed": 7}, seed=1)
    assert pads == [compute_proxy("pad", synth, real, {"split_seed": s}) for s in (7, 8, 9)]
    assert len(set(pads)) == 3  # a different split gives a different value
    opts = {"num_buckets": 4, "kmeans_num_redo": 1}
    mauves = compute_proxy_repeats("mauve", synth, real, {**opts, "noise_seeds": 3}, seed=42)
    assert mauves == [compute_proxy("mauve", synth, real, opts, seed=s) for s in (42, 43, 44)]


def test_noise_seeds_checked_before_any_work() -> None:
    assert PROXIES["pad"].noise == "split_seed" and PROXIES["mauve"].noise == "seed"
    assert PROXIES["mmd"].noise is None
    check_proxy_config("pad", {"noise_seeds": 5})
    with pytest.raises(ValueError, match="'mmd' has no random part; noise_seeds must be 1"):
        check_proxy_config("mmd", {"noise_seeds": 2})
    check_proxy_config("mmd", {"noise_seeds": 1})
    for bad in (0, -1, 2.5, "3", True):
        with pytest.raises(ValueError, match="noise_seeds must be an integer >= 1"):
            check_proxy_config("pad", {"noise_seeds": bad})


def test_score_set_logs_mean_std_and_repeats() -> None:
    synth, real = _pair(2)
    proxies = {
        "pad": OmegaConf.create({"name": "pad", "noise_seeds": 3}),
        "mmd": OmegaConf.create({"name": "mmd"}),
    }
    metrics, timings, tags = score_set(proxies, synth, real, seed=42)
    values = [compute_proxy("pad", synth, real, {"split_seed": s}) for s in (42, 43, 44)]
    assert metrics["pad"] == pytest.approx(np.mean(values))
    assert metrics["pad.std"] == pytest.approx(np.std(values, ddof=1))
    assert tags["synque.noise_seeds.pad"] == "3"
    assert "mmd.std" not in metrics and "synque.noise_seeds.mmd" not in tags
    assert set(timings) == {"seconds.pad", "seconds.mmd"}
    with pytest.raises(SynqueError, match="proxy.mmd: .*noise_seeds must be 1"):
        score_set({"mmd": OmegaConf.create({"name": "mmd", "noise_seeds": 2})}, synth, real, 42)


@pytest.mark.parametrize("name", ["pad", "mauve"])
def test_configs_keep_the_papers_single_value_by_default(name: str) -> None:
    node = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")[name]
    assert node.noise_seeds == 1
    check_proxy_config(name, node)


def test_one_noise_seed_keeps_the_config_hash_and_more_change_it(make_cfg) -> None:
    """Runs logged before `noise_seeds` existed are still found; asking for repeats reruns."""
    from omegaconf import open_dict

    from synque.config import config_hash

    cfg = make_cfg("+experiment=sentiment_repr")
    before = cfg.copy()
    with open_dict(before):
        for name in ("pad", "mauve"):
            del before.proxy[name]["noise_seeds"]
    assert config_hash(cfg) == config_hash(before)
    repeated = make_cfg("+experiment=sentiment_repr", "proxy.pad.noise_seeds=3")
    assert config_hash(repeated) != config_hash(cfg)
