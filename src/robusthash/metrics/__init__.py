"""Retrieval metrics under Hamming ranking (exact stable tie rule, compiled kernels, bounded memory)."""

from robusthash.metrics.retrieval import (
    DEFAULT_NS,
    RankingStatistics,
    average_precision,
    hamming_ranking,
    mean_average_precision,
    pack_bits,
    pr_curve_from_histograms,
    precision_at_n,
    precision_recall_at_ranks,
    precision_recall_curve,
    ranking_statistics,
    report_from_statistics,
    retrieval_report,
    targeted_map,
    targeted_success,
)
from robusthash.metrics.streaming import Alone, Collective, streaming_report, streaming_statistics

__all__ = [
    "Alone",
    "Collective",
    "DEFAULT_NS",
    "RankingStatistics",
    "average_precision",
    "hamming_ranking",
    "mean_average_precision",
    "pack_bits",
    "pr_curve_from_histograms",
    "precision_at_n",
    "precision_recall_at_ranks",
    "precision_recall_curve",
    "ranking_statistics",
    "report_from_statistics",
    "retrieval_report",
    "streaming_report",
    "streaming_statistics",
    "targeted_map",
    "targeted_success",
]
