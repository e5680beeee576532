"""Correlation and selection maths, plots and printed reports, on polars tables.

No MLflow here: stages read runs with `synque.tracking.read`, call these functions and log
what they return, so the maths can be tested (and reused) on hand-made tables.
"""

from synque.analysis.correlation import (
    COEFFICIENTS,
    MIN_SETS,
    batched_correlations,
    bootstrap,
    correlations,
    join_performance,
    select_performance,
    source_agreement,
    summarize,
    top_k,
)
from synque.analysis.plots import correlation_plots, interval_error_bars
from synque.analysis.report import print_ranking, print_summary
from synque.analysis.rules import (
    AgreementRank,
    MeanRank,
    MedianRank,
    SelectionRule,
    SingleProxy,
    WeightedRank,
    build_rules,
    rank_with_rule,
    rule_values,
)
from synque.analysis.selection import best_per_group, rank_candidates

__all__ = [
    "COEFFICIENTS",
    "AgreementRank",
    "MeanRank",
    "MedianRank",
    "SelectionRule",
    "SingleProxy",
    "WeightedRank",
    "build_rules",
    "rank_with_rule",
    "rule_values",
    "MIN_SETS",
    "batched_correlations",
    "best_per_group",
    "bootstrap",
    "correlation_plots",
    "correlations",
    "interval_error_bars",
    "join_performance",
    "print_ranking",
    "print_summary",
    "rank_candidates",
    "select_performance",
    "source_agreement",
    "summarize",
    "top_k",
]
