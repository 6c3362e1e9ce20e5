"""Metrics. A metric that cannot be computed raises MetricError; it never returns a default."""

from .accuracy import attack_accuracy, natural_accuracy, predict, topk_accuracy
from .confidence import confidence_summary, true_class_confidence
from .fid import eval_fid
from .knn import knn_distance, nearest_private

__all__ = [
    "attack_accuracy", "confidence_summary", "eval_fid", "knn_distance", "natural_accuracy",
    "nearest_private", "predict", "topk_accuracy", "true_class_confidence",
]
