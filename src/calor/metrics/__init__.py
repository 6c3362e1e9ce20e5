"""Metrics. A metric that cannot be computed raises MetricError; it never returns a default."""

from .accuracy import attack_accuracy, natural_accuracy, predict, topk_accuracy
from .agreement import cohen_kappa, judge_agreement
from .confidence import confidence_summary, true_class_confidence
from .fid import eval_fid
from .knn import knn_distance, nearest_private
from .probes import probe_images
from .realism import ClassGaussians, fit_class_gaussians

__all__ = [
    "ClassGaussians", "attack_accuracy", "cohen_kappa", "confidence_summary", "eval_fid", "fit_class_gaussians", "judge_agreement",
    "knn_distance", "natural_accuracy", "nearest_private", "predict", "probe_images", "topk_accuracy", "true_class_confidence",
]
