"""Ground-truth spread of the offline digits candidates (not a test).

Trains a simple classifier on the 64 pixels of each candidate set of `DIGITS_STRATEGIES`
and tests it on the real test set of a prepared digits task, for several training seeds,
so one can check that the family spans a wide, graded range of real-task accuracy (the
study's truth) with little seed noise. The project's trainer (a small CNN) gives other
numbers; this is a cheap stand-in to tune the family against.

    python bench/bench_digits_truth.py                 # MLP, training seeds 0 1 2
    python bench/bench_digits_truth.py --model logreg --root /tmp/digits
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from synque.data.digits import (
    DIGITS_STRATEGIES,
    generate_digits_set,
    prepare_digits_task,
    read_labeled_folder,
)


def classifier(model: str, seed: int) -> MLPClassifier | LogisticRegression:
    """A 64-unit MLP (seed-dependent init and batches) or a logistic regression."""
    if model == "mlp":
        return MLPClassifier((64,), max_iter=300, random_state=seed)
    return LogisticRegression(max_iter=2000, random_state=seed)


def accuracy(model: str, seed: int, train: tuple[np.ndarray, list[str]], test) -> float:
    images, labels = train
    fitted = classifier(model, seed).fit(images.reshape(len(images), -1) / 16, labels)
    test_images, test_labels = test
    return float(fitted.score(test_images.reshape(len(test_images), -1) / 16, test_labels))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="digits task folder (default: a temp folder)")
    parser.add_argument("--model", choices=["mlp", "logreg"], default="mlp")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--gen-seed", type=int, default=0, help="seed of the candidate sets")
    parser.add_argument("--n", type=int, default=1000, help="images per candidate")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=ConvergenceWarning)

    root = args.root or Path(tempfile.mkdtemp(prefix="digits-"))
    root = prepare_digits_task(root)
    test = read_labeled_folder(root / "real" / "test")
    print(f"task {root}: {len(test[1])} real test images; {args.model}, seeds {args.seeds}")
    print(f"{'candidate':<22} {'accuracy':>15} {'gen s':>6} {'train s':>8}")
    means: dict[str, float] = {}
    for name in DIGITS_STRATEGIES:
        start = time.perf_counter()
        items = generate_digits_set(
            name, n=args.n, seed=args.gen_seed, fit_root=root / "generator_fit"
        )
        generated = time.perf_counter() - start
        train = (np.stack([image for image, _ in items]), [label for _, label in items])
        scores = [accuracy(args.model, seed, train, test) for seed in args.seeds]
        means[name] = float(np.mean(scores))
        trained = time.perf_counter() - start - generated
        spread = f"{means[name]:.3f} ± {np.std(scores):.3f}"
        print(f"{name:<22} {spread:>15} {generated:>6.2f} {trained:>8.1f}", flush=True)
    best, worst = max(means, key=means.get), min(means, key=means.get)
    print(f"spread (best - worst): {means[best] - means[worst]:.3f}  ({best} - {worst})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
