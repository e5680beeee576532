"""Benchmark: embedding backends side by side with plain fp32 models, and how far proxies move.

Text (all-MiniLM-L6-v2, the sentiment task's headlines): plain sentence-transformers in
float32 (`model.encode`, no synque), then synque's text embedder for every `backend` -- fp32
(torch, the reference), bf16 (torch autocast), onnx (ONNX Runtime) and openvino, both float32
from synque's own ONNX export -- each on a fresh cache and the same N texts. Then the
sentiment study (every proxy of `sentiment_repr` on a subset of candidate sets, and their
Spearman, Kendall and Pearson with the released task performance) per backend, and its
largest deviation from fp32: relative for proxy values, absolute for correlations. The
parity rule for a default backend is 1e-3 relative and 0.005 absolute
(tests/embed/test_backend_parity.py).

Images (EfficientNet-Lite0 at 64 px, scikit-learn digits written as PNG): the network called
by hand in float32 (read, resize, forward; no synque), then synque's embedder in float32 and
bfloat16, and the largest relative deviation of the image proxies of `image_repr` on
candidate sets made from the digits (noise, blur, a class subset).

A backend that cannot load here (onnxruntime or openvino not installed: `pip install
synque[runtimes]`) prints the one-line reason instead of figures. Prints the load average
before and after: the figures are only comparable within one run.

    SYNQUE_DATA=/path/to/synque-data python bench/bench_embed_backends.py
    python bench/bench_embed_backends.py --texts 1000 --candidates 8 --examples 250 --images 300
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from synque import SynqueError
from synque.analysis.correlation import correlations
from synque.components import build
from synque.data.task import Task
from synque.embed.base import Embedder
from synque.proxies import PROXIES
from synque.stages.repr import proxy_configs, score_set

REPO = Path(__file__).resolve().parent.parent
#: `backend` settings of synque's text embedder, the reference first.
TEXT_BACKENDS = ["fp32", "bf16", "onnx", "openvino"]
PROXY_TOL = 1e-3  # relative, every proxy value
CORR_TOL = 0.005  # absolute, every correlation


def compose_config(*overrides: str, data_root: Path | None = None) -> DictConfig:
    """The config the CLI would compose (released data from SYNQUE_DATA or `data_root`)."""
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    if data_root is not None:
        with open_dict(cfg):
            cfg.paths.data_root = str(data_root)
    return cfg


@dataclass
class Study:
    """Proxy values per (dataset, proxy) and correlations per (proxy, coefficient)."""

    values: dict[tuple[str, str], float] = field(default_factory=dict)
    correlations: dict[tuple[str, str], float] = field(default_factory=dict)


def study_candidates(task: Task, n_candidates: int) -> list[tuple[str, str]]:
    """Every k-th candidate set (sorted by name), so the subset spans all generators."""
    pairs = sorted(task.pairs())
    step = max(1, len(pairs) // n_candidates)
    return pairs[::step][:n_candidates]


def sentiment_study(
    embedder: Embedder, cfg: DictConfig, n_candidates: int = 8, n_examples: int = 250
) -> Study:
    """The sentiment study on a subset, computed as `repr` and `correlate` compute it.

    `cfg` is a composed `+experiment=sentiment_repr` config (its seed and proxies are used);
    candidate sets are cut to their first `n_examples` texts; the real sample is whole. Kept
    are the values `correlate` reads (a proxy with `noise_seeds` > 1 logs the mean of its
    repeats under its name, and their spread as `<proxy>.std`, which is left out).
    """
    task: Task = build(cfg.task, "task")
    seed = int(cfg.seed)
    proxies = proxy_configs(cfg)
    study = Study()
    perf = {
        (r["group"], r["dataset"]): r["task_performance"]
        for r in task.recorded_performance().iter_rows(named=True)
    }
    pairs = study_candidates(task, n_candidates)
    reals: dict[str, np.ndarray] = {}
    for group, name in pairs:
        if group not in reals:
            reals[group] = embedder.embed(task.model_inputs(task.real_sample(group, seed)))
        synth = task.load_candidate(group, name).head(n_examples)
        metrics, _, _ = score_set(
            proxies, embedder.embed(task.model_inputs(synth)), reals[group], seed
        )
        for proxy, value in metrics.items():
            if proxy in PROXIES:  # not `<proxy>.std`, the spread of a proxy's own noise
                study.values[(name, proxy)] = float(value)
    y = np.array([perf[pair] for pair in pairs])
    for proxy in dict.fromkeys(p for _, p in study.values):
        x = np.array([study.values[(name, proxy)] for _, name in pairs])
        for coef, value in correlations(x, y).items():
            study.correlations[(proxy, coef)] = value
    return study


def deviation_by_proxy(reference: Study, other: Study) -> dict[str, tuple[float, float]]:
    """Per proxy: (largest relative deviation of a value, largest absolute of a correlation).

    A correlation undefined in both studies (NaN) counts as no deviation; undefined in one
    only counts as infinite.
    """
    out: dict[str, tuple[float, float]] = {}
    for proxy in dict.fromkeys(p for _, p in reference.values):
        rel = max(
            abs(other.values[(name, p)] - v) / max(abs(v), 1e-12)
            for (name, p), v in reference.values.items()
            if p == proxy
        )
        cor = 0.0
        for (p, coef), v in reference.correlations.items():
            w = other.correlations[(p, coef)]
            if p == proxy and not (math.isnan(v) and math.isnan(w)):
                cor = max(cor, abs(w - v) if not math.isnan(v - w) else math.inf)
        out[proxy] = (rel, cor)
    return out


def deviation(reference: Study, other: Study) -> tuple[float, float]:
    """(largest relative proxy deviation, largest absolute correlation deviation)."""
    per_proxy = deviation_by_proxy(reference, other).values()
    return max(r for r, _ in per_proxy), max(c for _, c in per_proxy)


def by_proxy_text(reference: Study, other: Study) -> str:
    """`pad 1.2e-03/0.0000, ...`: the deviations of each proxy, for the printed table."""
    return ", ".join(
        f"{p} {r:.1e}/{c:.4f}" for p, (r, c) in deviation_by_proxy(reference, other).items()
    )


def text_embedder(cache: Path, backend: str) -> Embedder:
    """synque's default text embedder (configs/embedder/minilm.yaml) with a backend."""
    node = compose_config(f"embedder.backend={backend}").embedder
    return build(node, "embedder", cache_dir=cache, progress=False)


def timed_rate(fn, n: int) -> float:  # noqa: ANN001 - any zero-argument callable
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def bench_texts(
    opts: argparse.Namespace, tmp: Path
) -> tuple[list[tuple[str, str, str, str]], list[str]]:
    """Rows (what, texts/s, proxy deviation, correlation deviation) of the text part, and
    each backend's deviations per proxy."""
    cfg = compose_config("+experiment=sentiment_repr", f"seed={opts.seed}")
    task: Task = build(cfg.task, "task")
    texts: list[str] = []
    for group, name in sorted(task.pairs()):
        texts.extend(task.model_inputs(task.load_candidate(group, name)))
        if len(set(texts)) >= opts.texts:
            break
    texts = list(dict.fromkeys(texts))[: opts.texts]
    rows = []

    from sentence_transformers import SentenceTransformer

    from synque.embed.text import packaged_model_path

    plain = SentenceTransformer(packaged_model_path("all-MiniLM-L6-v2"), device="cpu")
    plain.encode(texts[:64], batch_size=64)  # warm-up outside the timing
    rate = timed_rate(
        lambda: plain.encode(texts, batch_size=64, show_progress_bar=False), len(texts)
    )
    rows.append(("plain sentence-transformers fp32", f"{rate:.1f}", "-", "-"))
    reference: Study | None = None
    details: list[str] = []
    for backend in TEXT_BACKENDS:
        label = f"synque backend={backend}"
        try:
            embedder = text_embedder(tmp / f"text-{backend}", backend)
            embedder.embed(texts[:64])  # loads (and exports) the model outside the timing
            rate = timed_rate(lambda e=embedder: e.embed(texts), len(texts))
            study = sentiment_study(embedder, cfg, opts.candidates, opts.examples)
        except SynqueError as exc:
            rows.append((label, f"unavailable: {exc}", "-", "-"))
            continue
        if reference is None:
            reference = study
        rel, cor = deviation(reference, study)
        rows.append((label, f"{rate:.1f}", f"{rel:.2e}", f"{cor:.4f}"))
        details.append(f"{label}: {by_proxy_text(reference, study)}")
        print(f"done {label}", flush=True)
    return rows, details


def bench_images(opts: argparse.Namespace, tmp: Path) -> list[tuple[str, str, str, str]]:
    """Rows (what, images/s, proxy deviation, -) of the image part (EfficientNet-Lite0 64 px)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_embed_images import write_sets

    from synque.data.images import read_image, resize_square
    from synque.embed import EfficientNetLite0Embedder

    real_n = 100
    clean, _, sets = write_sets(tmp / "digits", opts.images, real_n, 50)
    reference = EfficientNetLite0Embedder(tmp / "img-ref", size=64, progress=False)
    net = reference.model()

    def by_hand(paths: Sequence[str]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for lo in range(0, len(paths), 64):
                batch = np.stack(
                    [resize_square(read_image(p), 64, "bicubic") for p in paths[lo : lo + 64]]
                )
                x = (torch.from_numpy(batch).permute(0, 3, 1, 2).float() - 127.0) / 128.0
                out.append(net.extract_features(x).mean((2, 3)).numpy())
        return np.concatenate(out)

    rows = []
    try:
        rate = timed_rate(lambda: by_hand(clean), len(clean))
        rows.append(("plain EfficientNet-Lite0 fp32 (by hand)", f"{rate:.1f}", "-", "-"))
    except AttributeError as exc:  # the network class offers no features method
        rows.append(("plain EfficientNet-Lite0 fp32 (by hand)", f"unavailable: {exc}", "-", "-"))
    cfg = compose_config("+experiment=image_repr", f"seed={opts.seed}")
    proxies = proxy_configs(cfg)
    ref_values: dict[tuple[str, str], float] = {}
    for dtype in ("float32", "bfloat16"):
        embedder = EfficientNetLite0Embedder(
            tmp / f"img-{dtype}", size=64, dtype=dtype, progress=False
        )
        embedder.model()
        rate = timed_rate(lambda e=embedder: e.embed(clean), len(clean))
        real = embedder.embed(clean[:real_n])
        values = {}
        for name, paths in sets.items():
            metrics, _, _ = score_set(proxies, embedder.embed(paths), real, opts.seed)
            values.update({(name, p): float(v) for p, v in metrics.items() if p in PROXIES})
        ref_values = ref_values or values
        rel = max(abs(values[k] - v) / max(abs(v), 1e-12) for k, v in ref_values.items())
        rows.append((f"synque EfficientNet-Lite0 {dtype}", f"{rate:.1f}", f"{rel:.2e}", "-"))
        per_proxy = {
            p: max(
                abs(values[(n, q)] - v) / max(abs(v), 1e-12)
                for (n, q), v in ref_values.items()
                if q == p
            )
            for p in dict.fromkeys(q for _, q in ref_values)
        }
        print(
            f"images {dtype} relative deviation per proxy: "
            + ", ".join(f"{p} {d:.1e}" for p, d in per_proxy.items()),
            flush=True,
        )
        print(f"done images {dtype}", flush=True)
    return rows


def print_rows(title: str, unit: str, rows: list[tuple[str, str, str, str]]) -> None:
    print(f"\n{title}")
    head = f"{'embedder':<42} {unit:>10} {'max proxy rel dev':>18} {'max corr dev':>13}"
    print(head)
    print("-" * len(head))
    for what, rate, rel, cor in rows:
        if rate.startswith("unavailable"):
            print(f"{what:<42} {rate}")
        else:
            print(f"{what:<42} {rate:>10} {rel:>18} {cor:>13}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000, help="texts embedded and timed")
    parser.add_argument("--candidates", type=int, default=8, help="candidate sets in the study")
    parser.add_argument("--examples", type=int, default=250, help="texts per candidate set")
    parser.add_argument("--images", type=int, default=500, help="digits embedded and timed")
    parser.add_argument("--seed", type=int, default=42, help="real-sample seed of the study")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--skip-images", action="store_true")
    parser.add_argument("--skip-texts", action="store_true")
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="synque-bench-") as tmp:
        text_rows, details = ([], []) if opts.skip_texts else bench_texts(opts, Path(tmp))
        image_rows = [] if opts.skip_images else bench_images(opts, Path(tmp))
    after = os.getloadavg()
    print(
        f"\ncpu, {opts.threads} torch thread(s) of {os.cpu_count()} cores; torch "
        f"{torch.__version__}; load average before {before[0]:.2f} {before[1]:.2f}, "
        f"after {after[0]:.2f} {after[1]:.2f} (1 and 5 min)"
    )
    if text_rows:
        print_rows(
            f"Text: all-MiniLM-L6-v2, {opts.texts} sentiment headlines; study: "
            f"{opts.candidates} candidate sets x {opts.examples} texts, seed {opts.seed} "
            f"(parity rule: {PROXY_TOL:g} relative, {CORR_TOL:g} absolute)",
            "texts/s",
            text_rows,
        )
        print("per proxy (relative value deviation / absolute correlation deviation):")
        for line in details:
            print(f"  {line}")
    if image_rows:
        print_rows(
            f"Images: EfficientNet-Lite0 64 px, {opts.images} digits (PNG); image_repr "
            "proxies on 6 candidate sets of 50 vs 100 real",
            "images/s",
            image_rows,
        )


if __name__ == "__main__":
    main()
