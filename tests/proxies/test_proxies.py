"""Tests for synque.proxies: hand-computed values, option variants, registry and configs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from synque.proxies import PROXIES, ProxySpec, compute_proxy, register

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "proxy"
EXPECTED_PROXIES = {"pad", "mmd", "mdm", "mauve"}


def _gauss(n: int, dim: int, shift: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, dim)) + shift).astype(np.float32)


# ---------------------------------------------------------------------------------------- MMD


def test_mmd_polynomial_by_hand_1d() -> None:
    # dim = 1 -> gamma = 1, coef0 = 1, degree 3: k(a, b) = (a*b + 1)^3
    x = np.array([[1.0], [2.0]], dtype=np.float32)
    y = np.array([[0.0], [1.0]], dtype=np.float32)
    kxx = [[8, 27], [27, 125]]  # (1+1)^3, (2+1)^3, (4+1)^3
    kyy = [[1, 1], [1, 8]]  # (0+1)^3, (1+1)^3
    kxy = [[1, 8], [1, 27]]  # x=1: y=0,1 ; x=2: y=0,1
    mean_xx = (8 + 27 + 27 + 125) / 4  # 46.75
    mean_yy = (1 + 1 + 1 + 8) / 4  # 2.75
    mean_xy = (1 + 8 + 1 + 27) / 4  # 9.25
    assert np.mean(kxx) == mean_xx and np.mean(kyy) == mean_yy and np.mean(kxy) == mean_xy
    biased = mean_xx + mean_yy - 2 * mean_xy  # 31.0
    unbiased = 27 + 1 - 2 * mean_xy  # off-diagonal means only: 9.5
    assert compute_proxy("mmd", x, y, {}) == pytest.approx(31.0)
    assert biased == pytest.approx(31.0)
    got_u = compute_proxy("mmd", x, y, {"estimator": "unbiased"})
    assert got_u == pytest.approx(unbiased) and unbiased == pytest.approx(9.5)


def test_mmd_polynomial_by_hand_2d_gamma_default_is_one_over_dim() -> None:
    # dim = 2 -> gamma = 1/2: k(a, b) = (<a,b>/2 + 1)^3
    x = np.array([[2.0, 0.0]])
    y = np.array([[0.0, 2.0], [2.0, 2.0]])
    kxx = (4 / 2 + 1) ** 3  # 27
    kyy = [(4 / 2 + 1) ** 3, (4 / 2 + 1) ** 3, (4 / 2 + 1) ** 3, (8 / 2 + 1) ** 3]  # 27,27,27,125
    kxy = [(0 / 2 + 1) ** 3, (4 / 2 + 1) ** 3]  # 1, 27
    expected = kxx + sum(kyy) / 4 - 2 * sum(kxy) / 2  # 27 + 51.5 - 28 = 50.5
    assert expected == pytest.approx(50.5)
    assert compute_proxy("mmd", x, y, {}) == pytest.approx(expected)
    # explicit kernel options are honoured: degree 1, gamma 1, coef0 0 -> linear kernel
    lin = compute_proxy("mmd", x, y, {"degree": 1, "gamma": 1.0, "coef0": 0.0})
    assert lin == pytest.approx(np.sum((x.mean(0) - y.mean(0)) ** 2))


def test_mmd_identical_sets_biased_zero_unbiased_negative() -> None:
    x = _gauss(30, 4, 0.0, 0)
    assert compute_proxy("mmd", x, x.copy(), {}) == pytest.approx(0.0, abs=1e-9)
    # identical sets: unbiased = 2 * (mean off-diagonal K - mean full K), and K's diagonal
    # dominates for this kernel, so the unbiased value is negative.
    xd = x.astype(np.float64)
    k = (xd @ xd.T / 4 + 1) ** 3
    n = len(x)
    off = (k.sum() - np.trace(k)) / (n * (n - 1))
    expected = 2 * (off - k.mean())
    got = compute_proxy("mmd", x, x.copy(), {"estimator": "unbiased"})
    assert got == pytest.approx(expected, rel=1e-9)
    assert got < 0


@pytest.mark.parametrize("kernel", ["polynomial", "rbf"])
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_mmd_blocked_equals_unblocked(kernel: str, estimator: str) -> None:
    x, y = _gauss(23, 5, 0.0, 1), _gauss(17, 5, 0.5, 2)
    base = {"kernel": kernel, "estimator": estimator}
    full = compute_proxy("mmd", x, y, {**base, "block_size": 10_000})
    for bs in (1, 3, 7, 16):
        assert compute_proxy("mmd", x, y, {**base, "block_size": bs}) == pytest.approx(
            full, rel=1e-10, abs=1e-12
        )


def test_mmd_rbf_median_by_hand() -> None:
    # pooled points 0, 1, 3 -> squared distances 1, 9, 4 -> sigma^2 = median = 4
    x = np.array([[0.0], [1.0]])
    y = np.array([[3.0]])
    s2 = 4.0
    mean_xx = (1 + 1 + 2 * math.exp(-1 / (2 * s2))) / 4
    mean_yy = 1.0
    mean_xy = (math.exp(-9 / (2 * s2)) + math.exp(-4 / (2 * s2))) / 2
    expected = mean_xx + mean_yy - 2 * mean_xy
    assert compute_proxy("mmd", x, y, {"kernel": "rbf"}) == pytest.approx(expected)
    # numeric bandwidth is sigma: sigma = 2 gives the same kernel as the median here
    assert compute_proxy("mmd", x, y, {"kernel": "rbf", "bandwidth": 2.0}) == pytest.approx(
        expected
    )
    assert compute_proxy("mmd", x, y, {"kernel": "rbf", "bandwidth": 1.0}) != pytest.approx(
        expected
    )


def test_mmd_rbf_median_sensible() -> None:
    real = _gauss(200, 8, 0.0, 3)
    same = _gauss(200, 8, 0.0, 4)
    far = _gauss(200, 8, 2.0, 5)
    p = {"kernel": "rbf"}
    near_val, far_val = compute_proxy("mmd", same, real, p), compute_proxy("mmd", far, real, p)
    assert 0 <= near_val < far_val <= 2
    assert near_val < 0.05 < far_val
    # subsampled median stays close to the exact one
    sub = compute_proxy("mmd", far, real, {**p, "median_max_points": 150}, seed=1)
    assert sub == pytest.approx(far_val, rel=0.2)


def test_mmd_bad_options() -> None:
    x = _gauss(5, 2, 0.0, 0)
    with pytest.raises(ValueError, match="kernel"):
        compute_proxy("mmd", x, x, {"kernel": "laplace"})
    with pytest.raises(ValueError, match="estimator"):
        compute_proxy("mmd", x, x, {"estimator": "linear"})
    with pytest.raises(ValueError, match="at least 2"):
        compute_proxy("mmd", x[:1], x, {"estimator": "unbiased"})


# ---------------------------------------------------------------------------------------- PAD


def test_pad_separable_is_about_two() -> None:
    synth, real = _gauss(100, 5, -10.0, 6), _gauss(100, 5, 10.0, 7)
    assert compute_proxy("pad", synth, real, {}) == pytest.approx(2.0, abs=0.05)


def test_pad_identical_distribution_is_small() -> None:
    synth, real = _gauss(300, 5, 0.0, 8), _gauss(300, 5, 0.0, 9)
    assert abs(compute_proxy("pad", synth, real, {})) < 0.3


def test_pad_default_matches_reference_recipe() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    synth, real = _gauss(120, 6, 0.0, 10), _gauss(80, 6, 0.4, 11)
    x = np.vstack([synth, real])
    y = np.array([0] * len(synth) + [1] * len(real))
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=42)
    p = LogisticRegression().fit(x_tr, y_tr).predict_proba(x_te)[:, 1]
    expected = 2 * (1 - 2 * np.mean(np.abs(p - y_te)))
    got = compute_proxy("pad", synth, real, {}, seed=123)  # seed does not change the default
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "params",
    [
        {"split": "kfold"},
        {"classifier": "xgboost"},
        {"classifier": "xgboost", "split": "kfold", "n_folds": 3},
    ],
)
def test_pad_variants_in_range(params: dict) -> None:
    synth, real = _gauss(60, 4, 0.0, 12), _gauss(60, 4, 0.3, 13)
    far = _gauss(60, 4, 8.0, 14)
    v = compute_proxy("pad", synth, real, params)
    v_far = compute_proxy("pad", far, real, params)
    assert -2 <= v <= 2 and -2 <= v_far <= 2
    assert v_far > 1.5 and v_far > v


def test_pad_bad_options() -> None:
    x = _gauss(20, 2, 0.0, 0)
    with pytest.raises(ValueError, match="classifier"):
        compute_proxy("pad", x, x, {"classifier": "svm"})
    with pytest.raises(ValueError, match="split"):
        compute_proxy("pad", x, x, {"split": "loo"})


# ---------------------------------------------------------------------------------------- MDM


def test_mdm_hand_made_clusters() -> None:
    # Five clusters far apart; cluster c has a centre plus n_dirs points on a circle of radius
    # r_c around it.  The centre is the medoid (sum of distances n_dirs*r_c vs more for any
    # circle point), so the cluster's mean distance is n_dirs*r_c/(n_dirs+1).
    radii = [1.0, 2.0, 3.0, 4.0, 5.0]
    n_dirs = [4, 8, 4, 8, 4]
    pts, expected = [], []
    for c, (r, nd) in enumerate(zip(radii, n_dirs, strict=True)):
        centre = np.array([1000.0 * c, -500.0 * c])
        pts.append(centre)
        for j in range(nd):
            ang = 2 * np.pi * j / nd
            pts.append(centre + r * np.array([np.cos(ang), np.sin(ang)]))
        expected.append(nd * r / (nd + 1))
    synth = np.array(pts)
    want = float(np.mean(expected))  # (0.8 + 16/9 + 2.4 + 32/9 + 4) / 5
    assert want == pytest.approx((0.8 + 16 / 9 + 2.4 + 32 / 9 + 4.0) / 5)
    real = np.zeros((3, 2))  # ignored
    for seed in (0, 1, 42):
        assert compute_proxy("mdm", synth, real, {}, seed=seed) == pytest.approx(want)
    assert compute_proxy("mdm", synth, real, {"random_state": 7}) == pytest.approx(want)
    # real set is ignored entirely
    other_real = _gauss(10, 2, 3.0, 0)
    assert compute_proxy("mdm", synth, other_real, {}) == pytest.approx(want)


def test_mdm_one_cluster_and_small_n() -> None:
    # k = 1 on a square of side 2 plus its centre: medoid is the centre, distances 0 + 4*sqrt(2)
    synth = np.array([[0.0, 0.0], [1, 1], [1, -1], [-1, 1], [-1, -1]])
    got = compute_proxy("mdm", synth, synth, {"n_clusters": 1})
    assert got == pytest.approx(4 * math.sqrt(2) / 5)
    # fewer points than clusters -> every point is its own medoid -> 0
    assert compute_proxy("mdm", synth[:3], synth, {}) == 0.0
    assert compute_proxy("mdm", synth[:1], synth, {}) == 0.0


def test_mdm_more_spread_scores_higher() -> None:
    tight, wide = _gauss(80, 6, 0.0, 15) * 0.1, _gauss(80, 6, 0.0, 15)
    assert compute_proxy("mdm", wide, wide, {}) > compute_proxy("mdm", tight, tight, {})


# -------------------------------------------------------------------------------------- MAUVE


def test_mauve_same_distribution_high_far_low() -> None:
    real = _gauss(500, 10, 0.0, 16)
    same = _gauss(500, 10, 0.0, 17)
    far = _gauss(500, 10, 3.0, 18)
    p = {"kmeans_num_redo": 2, "kmeans_max_iter": 100}
    near_val = compute_proxy("mauve", same, real, p)
    far_val = compute_proxy("mauve", far, real, p)
    assert near_val > 0.9
    assert far_val < 0.1
    assert compute_proxy("mauve", same, real, p) == near_val  # seeded -> deterministic


def test_mauve_options() -> None:
    x, y = _gauss(60, 4, 0.0, 19), _gauss(60, 4, 0.0, 20)
    v = compute_proxy("mauve", x, y, {"num_buckets": 4, "mauve_scaling_factor": 2.0})
    assert 0.0 <= v <= 1.0
    with pytest.raises(ValueError, match="num_buckets"):
        compute_proxy("mauve", x, y, {"num_buckets": 1})
    with pytest.raises(ValueError, match="kmeans_explained_var"):
        compute_proxy("mauve", x, y, {"kmeans_explained_var": 1.5})


# ----------------------------------------------------------------------------------- registry


def test_registry_contents() -> None:
    assert set(PROXIES) >= EXPECTED_PROXIES
    for name, spec in PROXIES.items():
        assert isinstance(spec, ProxySpec) and spec.name == name and callable(spec.fn)
    assert PROXIES["pad"].higher_is_better is False
    assert PROXIES["mmd"].higher_is_better is False
    assert PROXIES["mdm"].higher_is_better is True
    assert PROXIES["mauve"].higher_is_better is True


def test_register_adds_and_rejects_duplicates() -> None:
    @register("_test_const", higher_is_better=True)
    def _const(synth: np.ndarray, real: np.ndarray, *, seed: int, value: float = 1.0) -> float:
        return value + seed

    try:
        x = np.zeros((2, 2))
        assert compute_proxy("_test_const", x, x, {"value": 2.0, "variant": "v"}, seed=3) == 5.0
        with pytest.raises(ValueError, match="already registered"):
            register("_test_const", higher_is_better=True)(_const)
    finally:
        PROXIES.pop("_test_const", None)


def test_unknown_proxy_lists_known_names() -> None:
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match="unknown proxy") as err:
        compute_proxy("no_such_proxy", x, x, {})
    for name in EXPECTED_PROXIES:
        assert name in str(err.value)


@pytest.mark.parametrize(
    ("synth", "real", "msg"),
    [
        (np.zeros(5), np.zeros((5, 2)), "2-D"),
        (np.zeros((5, 2)), np.zeros((5, 2, 1)), "2-D"),
        (np.zeros((5, 2)), np.zeros((5, 3)), "dimensions differ"),
        (np.zeros((0, 2)), np.zeros((5, 2)), "empty"),
        (np.zeros((5, 2)), np.zeros((0, 2)), "empty"),
        (np.zeros((5, 0)), np.zeros((5, 0)), "dimension 0"),
        (np.array([[0.0, np.nan]]), np.zeros((5, 2)), "NaN"),
        (np.zeros((5, 2)), np.array([[np.inf, 0.0]]), "NaN or infinite"),
    ],
)
def test_bad_inputs_raise(synth: np.ndarray, real: np.ndarray, msg: str) -> None:
    for name in EXPECTED_PROXIES:
        with pytest.raises(ValueError, match=msg):
            compute_proxy(name, synth, real, {})


def test_unknown_option_and_seed_in_params_rejected() -> None:
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="unknown option"):
        compute_proxy("mmd", x, x, {"kernal": "rbf"})
    with pytest.raises(ValueError, match="seed"):
        compute_proxy("mmd", x, x, {"seed": 1})


# ------------------------------------------------------------------------------------ configs


@pytest.mark.parametrize("name", sorted(EXPECTED_PROXIES))
def test_yaml_config_consistent_with_registry(name: str) -> None:
    cfg = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
    assert list(cfg.keys()) == [name]
    node = cfg[name]
    assert node.name == name
    assert node.higher_is_better is PROXIES[name].higher_is_better
    assert "variant" in node
    # every remaining key is a real option of the function and the defaults run end to end
    synth, real = _gauss(60, 4, 0.0, 21), _gauss(60, 4, 0.5, 22)
    val = compute_proxy(name, synth, real, node)
    assert math.isfinite(val)


def test_yaml_defaults_equal_function_defaults() -> None:
    # The YAML files should not silently change the documented default formulas.
    synth, real = _gauss(60, 4, 0.0, 23), _gauss(50, 4, 0.5, 24)
    for name in ("pad", "mmd", "mdm"):
        node = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")[name]
        assert compute_proxy(name, synth, real, node) == pytest.approx(
            compute_proxy(name, synth, real, {})
        )
