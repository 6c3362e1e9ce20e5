"""Datasets: sources (embedded MNIST, IDX directories), transforms, and the scenario split."""

from .sources import SOURCES, load_embedded_mnist, load_idx_directory
from .splits import SplitData, make_splits
from .transforms import random_shift, to_model_range

__all__ = ["SOURCES", "SplitData", "load_embedded_mnist", "load_idx_directory", "make_splits", "random_shift", "to_model_range"]
