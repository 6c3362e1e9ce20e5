import pytest
import torch
from torch import nn

from calor import MetricError
from calor.metrics import eval_fid, knn_distance, nearest_private, topk_accuracy


def test_knn_distance_hand_made() -> None:
    priv = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 5.0]])
    priv_y = torch.tensor([0, 0, 1])
    rec = torch.tensor([[1.0, 0.0], [9.0, 1.0], [0.0, 2.0]])
    rec_y = torch.tensor([0, 0, 1])
    # nearest same-class squared distances: 1, 1+1=2, 9 (class 1 only has (0, 5)) -> mean 4
    assert knn_distance(rec, rec_y, priv, priv_y) == pytest.approx(4.0)
    d, idx = nearest_private(rec, rec_y, priv, priv_y)
    assert idx.tolist() == [0, 1, 2]


def test_knn_distance_missing_class_raises() -> None:
    with pytest.raises(MetricError, match="class 2"):
        knn_distance(torch.zeros(1, 2), torch.tensor([2]), torch.zeros(3, 2), torch.tensor([0, 0, 1]))


class Identity(nn.Module):
    feature_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_fid_identical_sets_near_zero_and_shifted_positive() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 1, 2, 2, generator=g)
    assert eval_fid(Identity(), x, x.clone()) == pytest.approx(0.0, abs=1e-3)
    shifted = eval_fid(Identity(), x + 1.0, x)
    assert shifted == pytest.approx(4.0, rel=0.05)  # mean shift of 1 in 4 dims, same covariance


def test_fid_needs_two_samples() -> None:
    with pytest.raises(MetricError):
        eval_fid(Identity(), torch.zeros(1, 1, 2, 2), torch.zeros(5, 1, 2, 2))


def test_topk_accuracy() -> None:
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    y = torch.tensor([1, 1, 0])
    assert topk_accuracy(logits, y, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, y, 2) == pytest.approx(2 / 3)
    with pytest.raises(MetricError):
        topk_accuracy(logits, y, 5)
