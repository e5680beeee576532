"""PAD: proxy A-distance from a synthetic-vs-real domain classifier (lower is better)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from synque.proxies.registry import register


def _make_classifier(classifier: str, split_seed: int, classifier_params: Mapping[str, Any]):
    """Build the domain classifier; defaults reproduce the reference PAD setup."""
    if classifier == "logistic":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(**dict(classifier_params))
    if classifier == "xgboost":
        from xgboost import XGBClassifier

        opts: dict[str, Any] = {
            "n_estimators": 100,
            "max_depth": 4,
            "learning_rate": 0.1,
            "tree_method": "hist",
            "n_jobs": 2,
            "random_state": split_seed,
        }
        opts.update(classifier_params)
        return XGBClassifier(**opts)
    raise ValueError(f"unknown PAD classifier {classifier!r}; use 'logistic' or 'xgboost'")


def _pad_from_probs(p: np.ndarray, y: np.ndarray) -> float:
    """PAD = 2 (1 - 2 * mean |p - y|), the released-code form with soft errors."""
    err = float(np.mean(np.abs(np.asarray(p, dtype=np.float64) - y)))
    return 2.0 * (1.0 - 2.0 * err)


@register("pad", higher_is_better=False, noise="split_seed")
def pad(
    synth: np.ndarray,
    real: np.ndarray,
    *,
    seed: int,
    classifier: str = "logistic",
    split: str = "holdout",
    test_size: float = 0.2,
    n_folds: int = 5,
    split_seed: int = 42,
    classifier_params: Mapping[str, Any] | None = None,
) -> float:
    """Proxy A-distance: how well a classifier tells synthetic (0) from real (1); lower is better.

    ``seed`` is unused: the split is governed by ``split_seed`` so that the default matches the
    reference implementation (``train_test_split(..., test_size=0.2, random_state=42)``).
    """
    del seed
    x = np.vstack([synth, real])
    y = np.concatenate([np.zeros(len(synth), dtype=np.int64), np.ones(len(real), dtype=np.int64)])
    cparams = dict(classifier_params or {})

    if split == "holdout":
        from sklearn.model_selection import train_test_split

        x_tr, x_te, y_tr, y_te = train_test_split(
            x, y, test_size=test_size, random_state=split_seed
        )
        if len(np.unique(y_tr)) < 2:
            raise ValueError("PAD training split holds only one class; add more samples")
        clf = _make_classifier(classifier, split_seed, cparams)
        clf.fit(x_tr, y_tr)
        return _pad_from_probs(clf.predict_proba(x_te)[:, 1], y_te)

    if split == "kfold":
        from sklearn.model_selection import StratifiedKFold

        if min(len(synth), len(real)) < n_folds:
            raise ValueError(f"PAD kfold needs at least n_folds={n_folds} points in each set")
        folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=split_seed)
        oof = np.empty(len(y), dtype=np.float64)
        for tr, te in folds.split(x, y):
            clf = _make_classifier(classifier, split_seed, cparams)
            clf.fit(x[tr], y[tr])
            oof[te] = clf.predict_proba(x[te])[:, 1]
        return _pad_from_probs(oof, y)

    raise ValueError(f"unknown PAD split {split!r}; use 'holdout' or 'kfold'")
