"""Tests for the image proxies: Frechet distance, KID, precision/recall/density/coverage."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
from omegaconf import OmegaConf

from synque import SynqueError
from synque.proxies import PROXIES, ProxyWarning, compute_proxy, register
from synque.proxies import kid as kid_module
from synque.proxies import prdc as prdc_module
from synque.proxies.frechet import trace_sqrt_product
from synque.stages.repr import score_set
from tests.fakes.folders import make_folder

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "proxy"
MANIFOLD = ("precision", "recall", "density", "coverage")
IMAGE_PROXIES = ("fid", "kid", *MANIFOLD)


def _gauss(n: int, dim: int, shift: float, seed: int, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)) * scale + shift


def _fd_with_sqrtm(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook formula with a plain matrix square root (the slow reference)."""
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(s1 + s2) - 2 * np.trace(root))


def _fid_quiet(x: np.ndarray, y: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProxyWarning)
        return compute_proxy("fid", x, y, {})


# ----------------------------------------------------------------------------------------- FD


def test_fd_one_dimension_by_hand() -> None:
    # x = 0, 2: mean 1, unbiased variance 2; y = 1, 3, 5: mean 3, variance 4.
    # FD of 1-D Gaussians = (m1 - m2)^2 + (s1 - s2)^2 = 4 + (sqrt 2 - 2)^2 = 10 - 4 sqrt 2
    x, y = np.array([[0.0], [2.0]]), np.array([[1.0], [3.0], [5.0]])
    assert compute_proxy("fid", x, y, {}) == pytest.approx(10 - 4 * math.sqrt(2), rel=1e-12)


def test_fd_diagonal_covariances_by_hand() -> None:
    # Points (+-a, +-b) on the axes' corners: covariances diagonal, sqrt(S1 S2) = diag(sqrt)
    x = np.array([[1.0, 2.0], [-1.0, -2.0], [1.0, -2.0], [-1.0, 2.0]])  # var 4/3, 16/3
    y = 3.0 * x + np.array([1.0, 0.0])  # mean (1, 0), var 12, 48
    mean_term = 1.0
    trace_term = (4 / 3 + 16 / 3) + (12 + 48) - 2 * (math.sqrt(16) + math.sqrt(256))
    # = 20/3 + 60 - 40 = 80/3 (each axis: (sqrt v - 3 sqrt v)^2 = 4 v)
    assert trace_term == pytest.approx(4 * (4 / 3 + 16 / 3))
    assert compute_proxy("fid", x, y, {}) == pytest.approx(mean_term + trace_term, rel=1e-12)


@pytest.mark.parametrize(
    ("n_x", "n_y", "dim", "rel"),
    [
        (60, 45, 8, 1e-9),  # n > d: covariance eigen-factor route
        (10, 14, 20, 1e-6),  # n < d: nuclear norm of the centred cross product
        (9, 70, 20, 1e-6),  # one set thin, one not
        (70, 9, 20, 1e-6),
    ],
)
def test_fd_equals_sqrtm_reference(n_x: int, n_y: int, dim: int, rel: float) -> None:
    # With n <= d the covariances are singular and sqrtm itself loses ~1e-8 (checked against
    # a 40-digit mpmath SVD while writing this), hence the looser tolerance there.
    x = _gauss(n_x, dim, 0.0, 1)
    y = _gauss(n_y, dim, 0.3, 2, scale=1.4)
    want = _fd_with_sqrtm(x, y)
    assert want > 1.0
    assert _fid_quiet(x, y) == pytest.approx(want, rel=rel)
    assert _fid_quiet(y, x) == pytest.approx(want, rel=rel)  # symmetric


@pytest.mark.parametrize(("n", "dim"), [(120, 6), (12, 40)])
def test_fd_identical_sets_is_zero(n: int, dim: int) -> None:
    x = _gauss(n, dim, 2.0, 3, scale=5.0)
    assert _fid_quiet(x, x.copy()) == pytest.approx(0.0, abs=1e-9)
    assert _fid_quiet(x, x + 1.0) == pytest.approx(dim, rel=1e-9)  # only the mean term


def test_trace_sqrt_product_routes_agree() -> None:
    # The same pair of covariances reached by both routes: data (n <= d) and eigen-factor
    # (n > d, by stacking the data with its mirror image, which keeps the covariance up to scale)
    a, b = _gauss(7, 10, 0.0, 4), _gauss(9, 10, 0.0, 5)
    thin = trace_sqrt_product(a, b)
    a2 = np.vstack([a, -a]) / math.sqrt(2)  # A2^T A2 = A^T A, 14 rows
    b2 = np.vstack([b, -b]) / math.sqrt(2)  # 18 rows > 10 = dim
    assert trace_sqrt_product(a2, b2) == pytest.approx(thin, rel=1e-8)


def test_fd_warns_only_when_samples_do_not_exceed_dimensions() -> None:
    with pytest.warns(ProxyWarning, match=r"fid: 5 synthetic and 30 real samples for 8 dim"):
        compute_proxy("fid", _gauss(5, 8, 0, 6), _gauss(30, 8, 0, 7), {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compute_proxy("fid", _gauss(9, 8, 0, 6), _gauss(30, 8, 0, 7), {})
    with pytest.raises(ValueError, match="at least 2 points"):
        compute_proxy("fid", _gauss(1, 3, 0, 6), _gauss(30, 3, 0, 7), {})


# ---------------------------------------------------------------------------------------- KID


# 1-D, k(a, b) = (a b + 1)^3; real y = {0, 1}: Kyy off-diagonal k(0, 1) = 1.
# Subsets of size 2 of x = {1, 2, 3} (all of y each time):
#   {1,2}: Kxx off 27;  Kxy 1, 8, 1, 27 -> mean 9.25;  27 + 1 - 2 * 9.25  = 9.5
#   {1,3}: Kxx off 64;  Kxy 1, 8, 1, 64 -> mean 18.5;  64 + 1 - 2 * 18.5  = 28
#   {2,3}: Kxx off 343; Kxy 1, 27, 1, 64 -> mean 23.25; 343 + 1 - 2 * 23.25 = 297.5
KID_X, KID_Y = np.array([[1.0], [2.0], [3.0]]), np.array([[0.0], [1.0]])
KID_PAIRS = (9.5, 28.0, 297.5)


def test_kid_whole_sets_by_hand() -> None:
    # equal sizes not above subset_size: every subset is the whole set, value computed once
    got = compute_proxy("kid", KID_X[:2], KID_Y, {"n_subsets": 7})
    assert got == pytest.approx(KID_PAIRS[0])


def test_kid_subsets_by_hand() -> None:
    one = compute_proxy("kid", KID_X, KID_Y, {"n_subsets": 1}, seed=0)
    assert min(abs(one - v) for v in KID_PAIRS) < 1e-9
    # four subsets: the value is a mean of four of the three pair values
    four = compute_proxy("kid", KID_X, KID_Y, {"n_subsets": 4}, seed=0)
    means = {
        (a * KID_PAIRS[0] + b * KID_PAIRS[1] + (4 - a - b) * KID_PAIRS[2]) / 4
        for a in range(5)
        for b in range(5 - a)
    }
    assert min(abs(four - v) for v in means) < 1e-9
    # many subsets: close to the mean over the three equally likely pairs, 335 / 3
    many = compute_proxy("kid", KID_X, KID_Y, {"n_subsets": 3000})
    assert many == pytest.approx(335 / 3, abs=15)  # 5 standard errors
    # seeded: the run seed by default, random_state overrides it
    assert compute_proxy("kid", KID_X, KID_Y, {"n_subsets": 4}, seed=0) == four
    pinned = {"n_subsets": 9, "random_state": 5}
    assert compute_proxy("kid", KID_X, KID_Y, pinned, seed=1) == compute_proxy(
        "kid", KID_X, KID_Y, pinned, seed=2
    )


def test_kid_routes_and_blocks_agree() -> None:
    # whole-set kernels with subset indicators == each subset's own kernels, any block size
    x, y = _gauss(40, 6, 0.0, 8), _gauss(25, 6, 0.5, 9)
    rng = np.random.default_rng(0)
    draws = [(rng.choice(40, 20, replace=False), rng.choice(25, 20, replace=False)) for _ in "abc"]
    per_subset = kid_module.subset_values(x, y, draws, whole_sets=False)
    by_hand = []
    for ix, iy in draws:  # the unbiased MMD^2 written out on one subset
        kxx, kyy = (x[ix] @ x[ix].T / 6 + 1) ** 3, (y[iy] @ y[iy].T / 6 + 1) ** 3
        kxy = (x[ix] @ y[iy].T / 6 + 1) ** 3
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (20 * 19)
        by_hand.append(off - 2 * kxy.mean())
    assert per_subset == pytest.approx(by_hand, rel=1e-10)
    for block_size in (1, 7, 2048):
        whole = kid_module.subset_values(x, y, draws, block_size, whole_sets=True)
        assert whole == pytest.approx(by_hand, rel=1e-10)
    assert compute_proxy("kid", x, y, {"n_subsets": 6, "subset_size": 20, "block_size": 3}) == (
        pytest.approx(compute_proxy("kid", x, y, {"n_subsets": 6, "subset_size": 20}), rel=1e-10)
    )


def test_kid_same_distribution_near_zero_far_positive() -> None:
    real = _gauss(150, 8, 0.0, 10)
    near = compute_proxy("kid", _gauss(160, 8, 0.0, 11), real, {"subset_size": 100})
    far = compute_proxy("kid", _gauss(160, 8, 1.0, 12), real, {"subset_size": 100})
    assert abs(near) < 0.05 < far


def test_kid_bad_options() -> None:
    with pytest.raises(ValueError, match="at least 2 points"):
        compute_proxy("kid", KID_X, KID_Y[:1], {})
    with pytest.raises(ValueError, match="n_subsets"):
        compute_proxy("kid", KID_X, KID_Y, {"n_subsets": 0})


# ------------------------------------------------------------------ precision/recall/density/…


def _manifold_values(x: np.ndarray, y: np.ndarray, params: dict) -> dict[str, float]:
    return {m: compute_proxy(m, x, y, params) for m in MANIFOLD}


def test_manifolds_by_hand() -> None:
    # real 0, 1, 2, 3 (1-NN radius 1 each); synthetic 0.5, 4 (1-NN radius 3.5 each); k = 1.
    # 4 is exactly on the border of the ball of 3: balls are open (strict <), as in prdc.
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    synth = np.array([[0.5], [4.0]])
    got = _manifold_values(synth, real, {"nearest_k": 1})
    assert got == pytest.approx(
        {
            "precision": 1 / 2,  # 0.5 lies in the balls of 0 and 1; 4 in none
            "recall": 1.0,  # the ball of 0.5 (radius 3.5) holds every real point
            "density": 2 / (1 * 2),  # two real balls hold 0.5, none holds 4
            "coverage": 2 / 4,  # balls of 0 and 1 hold a synthetic point, 2 and 3 do not
        }
    )


@pytest.mark.parametrize(("nearest_k", "block_size"), [(5, 1024), (3, 7), (1, 1)])
def test_manifolds_equal_the_prdc_package(nearest_k: int, block_size: int) -> None:
    from prdc import compute_prdc

    synth, real = _gauss(90, 6, 0.3, 13), _gauss(70, 6, 0.0, 14, scale=1.2)
    prdc_module._last.clear()  # compute afresh with this block size, not from the cache
    want = compute_prdc(real_features=real, fake_features=synth, nearest_k=nearest_k)
    got = _manifold_values(synth, real, {"nearest_k": nearest_k, "block_size": block_size})
    assert got == pytest.approx({k: float(v) for k, v in want.items()}, rel=1e-12)
    assert 0 < got["precision"] < 1 and 0 < got["coverage"] < 1


def test_manifolds_computed_once_for_the_four(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_radii = prdc_module._kth_neighbour_radii
    monkeypatch.setattr(
        prdc_module,
        "_kth_neighbour_radii",
        lambda *args: calls.append(1) or real_radii(*args),
    )
    synth, real = _gauss(30, 4, 0.0, 15), _gauss(30, 4, 0.2, 16)
    configs = {m: OmegaConf.create({"name": m, "nearest_k": 3}) for m in MANIFOLD}
    first, _, _ = score_set(configs, synth, real, seed=42)
    assert len(calls) == 2  # real radii + synthetic radii, once for all four
    # the cache is keyed on content: changed values (same object) are recomputed
    synth += 5.0
    second, _, _ = score_set(configs, synth, real, seed=42)
    assert len(calls) == 4 and second["precision"] < first["precision"]
    # a different k is a different computation
    compute_proxy("recall", synth, real, {"nearest_k": 2})
    assert len(calls) == 6


def test_manifolds_need_more_points_than_k() -> None:
    x = _gauss(5, 3, 0.0, 17)
    with pytest.raises(ValueError, match="more than nearest_k=5"):
        compute_proxy("precision", x, _gauss(30, 3, 0.0, 18), {})
    with pytest.raises(SynqueError, match=r"^proxy\.coverage: .*nearest_k=5"):
        score_set({"coverage": OmegaConf.create({"name": "coverage"})}, x, x, seed=1)


# ------------------------------------------------------------------- warnings reach the runs


def test_score_set_turns_proxy_warnings_into_tags() -> None:
    fid_cfg = {"fid": OmegaConf.create({"name": "fid", "variant": "v1"})}
    _, _, tags = score_set(fid_cfg, _gauss(6, 10, 0, 19), _gauss(20, 10, 0, 20), seed=42)
    note = tags["synque.warning.fid"]
    assert "\n" not in note and "6 synthetic and 20 real samples for 10 dimensions" in note
    assert tags["synque.variant.fid"] == "v1" and tags["synque.higher_is_better.fid"] == "False"
    _, _, quiet = score_set(fid_cfg, _gauss(16, 10, 0, 19), _gauss(20, 10, 0, 20), seed=42)
    assert "synque.warning.fid" not in quiet


def test_score_set_passes_other_warnings_through() -> None:
    @register("_test_warns", higher_is_better=True)
    def _warns(synth: np.ndarray, real: np.ndarray, *, seed: int) -> float:
        warnings.warn("first\nline two", ProxyWarning, stacklevel=1)
        warnings.warn("not a proxy caveat", RuntimeWarning, stacklevel=1)
        return 1.0

    try:
        x = np.zeros((3, 2))
        with pytest.warns(RuntimeWarning, match="not a proxy caveat"):
            _, _, tags = score_set({"w": OmegaConf.create({"name": "_test_warns"})}, x, x, 1)
        assert tags["synque.warning._test_warns"] == "first line two"
    finally:
        PROXIES.pop("_test_warns", None)


@pytest.mark.slow  # ~20 s: loads MiniLM and writes an MLflow store
def test_repr_stage_logs_the_fid_warning_tag(make_cfg, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from synque.stages.repr import run_repr

    root = make_folder(tmp_path / "tiny", n_sets=1, n=12)  # 12 texts < 384 MiniLM dimensions
    cfg = make_cfg(
        "+experiment=folder_repr", f"task.root={root}", f"proxy=[{','.join(IMAGE_PROXIES)}]"
    )
    run_repr(cfg)
    client = MlflowClient(cfg.tracking.uri)
    exp = client.get_experiment_by_name("synque-tiny")
    runs = client.search_runs([exp.experiment_id], "tags.`synque.role` = 'child'")
    assert len(runs) == 1
    tags, metrics = runs[0].data.tags, runs[0].data.metrics
    assert "12 synthetic and 12 real samples for 384 dimensions" in tags["synque.warning.fid"]
    assert set(tags["synque.proxy"].split(",")) == set(IMAGE_PROXIES)
    for name in IMAGE_PROXIES:
        assert math.isfinite(metrics[name])
        assert tags[f"synque.higher_is_better.{name}"] == str(PROXIES[name].higher_is_better)
    assert metrics["fid"] > 0 and 0 <= metrics["coverage"] <= 1


# -------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", IMAGE_PROXIES)
def test_yaml_config_matches_registry_and_defaults(name: str) -> None:
    cfg = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
    assert list(cfg.keys()) == [name]
    node = cfg[name]
    assert node.name == name and "variant" in node
    assert node.higher_is_better is PROXIES[name].higher_is_better
    synth, real = _gauss(40, 4, 0.0, 21), _gauss(30, 4, 0.5, 22)
    assert compute_proxy(name, synth, real, node) == pytest.approx(
        compute_proxy(name, synth, real, {})
    )
