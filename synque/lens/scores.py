"""The LENS scores of a judgments table: raw and debiased (DESIGN, "LENS, precisely").

raw LENS = mean over x in S of 1/2 sum_L v_real,L / max(eps, v_real,L + v_synth,L).
Debiased LENS normalises each judgment by its mean on the *other* set (muR_j: mean over R,
at least eps; muS_j: mean over S, 1 where it is 0) and averages
e(x) = 1/2 sum_L h_r / (h_r + h_s + eps) over S and e'(x) = 1/2 sum_L h_s / (h_r + h_s + eps)
over R. With answer probabilities, the `_expected` variants use sum p*score per judgment.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from synque import SynqueError
from synque.lens.judge import JUDGMENT_COLUMNS, LIKERT, PROB_COLUMNS

EPS = 1e-6
#: (real_L, synth_L) column positions in JUDGMENT_COLUMNS for L = A, B.
_PAIRS = ((0, 1), (2, 3))


def _lens_arrays(synth: np.ndarray, real: np.ndarray) -> tuple[float, float]:
    """(debiased LENS, raw LENS) from (n, 4) arrays in JUDGMENT_COLUMNS order."""
    raw = np.zeros(len(synth))
    for r, s in _PAIRS:
        raw += 0.5 * synth[:, r] / np.maximum(EPS, synth[:, r] + synth[:, s])
    mu_real = np.maximum(real.mean(axis=0), EPS)
    mu_synth = synth.mean(axis=0)
    mu_synth = np.where(mu_synth == 0, 1.0, mu_synth)
    e_synth = np.zeros(len(synth))
    e_real = np.zeros(len(real))
    for r, s in _PAIRS:
        h_r, h_s = synth[:, r] / mu_real[r], synth[:, s] / mu_real[s]
        e_synth += 0.5 * h_r / (h_r + h_s + EPS)
        h_r, h_s = real[:, r] / mu_synth[r], real[:, s] / mu_synth[s]
        e_real += 0.5 * h_s / (h_r + h_s + EPS)
    lens = (e_synth.sum() + e_real.sum()) / (len(synth) + len(real))
    return float(lens), float(raw.mean())


def _split(judgments: pl.DataFrame, columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(synthetic rows, real rows) of `columns` as float arrays."""
    missing = [c for c in ("set", *columns) if c not in judgments.columns]
    if missing:
        raise SynqueError("judgments table is missing columns " + ", ".join(missing))
    is_synth = (judgments["set"] == "synthetic").to_numpy()
    is_real = (judgments["set"] == "real").to_numpy()
    if not is_synth.any() or not is_real.any():
        raise SynqueError("LENS needs judgments of both synthetic and real examples")
    values = judgments.select(columns).to_numpy().astype(np.float64)
    return values[is_synth], values[is_real]


def expected_scores(judgments: pl.DataFrame) -> pl.DataFrame:
    """Sum p*score per judgment (columns JUDGMENT_COLUMNS) from the probability columns."""
    scores = np.arange(len(LIKERT), dtype=np.float64)
    expected = {
        col: judgments.select([f"p{col[1:]}_{k}" for k in range(len(LIKERT))]).to_numpy() @ scores
        for col in JUDGMENT_COLUMNS
    }
    return pl.DataFrame({"set": judgments["set"], **expected})


def lens_scores(judgments: pl.DataFrame) -> dict[str, float]:
    """`lens` (debiased, the headline) and `lens_raw`; with probability columns also
    `lens_expected` and `lens_raw_expected` (sum p*score instead of the argmax answer)."""
    synth, real = _split(judgments, JUDGMENT_COLUMNS)
    lens, raw = _lens_arrays(synth, real)
    out = {"lens": lens, "lens_raw": raw}
    if all(c in judgments.columns for c in PROB_COLUMNS):
        e_synth, e_real = _split(expected_scores(judgments), JUDGMENT_COLUMNS)
        lens_e, raw_e = _lens_arrays(e_synth, e_real)
        out.update({"lens_expected": lens_e, "lens_raw_expected": raw_e})
    return out
