from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from calor import MetricError
from calor.images import save_annotated_grid
from calor.metrics.diversity import coverage, degenerate_mask, duplicate_rate, within_class_diversity
from calor.metrics.fid import eval_fid, fid_min_samples
from calor.metrics.kid import kernel_inception_distance, kid_from_images
from calor.metrics.pixel import nearest_private_pixels


class Flatten(nn.Module):
    """Tiny stand-in for an evaluation model: features are the flattened pixels."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.w = nn.Parameter(torch.zeros(1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_kid_same_distribution_near_zero_shifted_positive() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g)
    same = kernel_inception_distance(a, b)
    shifted = kernel_inception_distance(a + 1.0, b)
    assert abs(same) < 0.15  # estimator noise at n=200 is a few hundredths (seeds 0-4: -0.03 .. 0.06)
    assert shifted > 5.0 and shifted > 50 * abs(same)


def test_kid_matches_naive_double_loop() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 3, generator=g), torch.randn(4, 3, generator=g) + 0.3
    x64, y64 = x.double(), y.double()

    def k(u: torch.Tensor, v: torch.Tensor) -> float:
        return float((u @ v / 3 + 1) ** 3)

    m, n = len(x), len(y)
    xx = sum(k(x64[i], x64[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y64[i], y64[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x64[i], y64[j]) for i in range(m) for j in range(n)) / (m * n)
    assert kernel_inception_distance(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10, abs=1e-12)


def test_kid_needs_two_samples_and_from_images() -> None:
    with pytest.raises(MetricError, match="at least 2"):
        kernel_inception_distance(torch.zeros(1, 4), torch.zeros(5, 4))
    x = torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(2))
    assert kid_from_images(Flatten(4), x, x + 0.5) == pytest.approx(kernel_inception_distance(x.flatten(1), x.flatten(1) + 0.5))


def test_fid_refuses_too_few_samples() -> None:
    assert fid_min_samples(16) == 17
    x = torch.randn(40, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    with pytest.raises(MetricError, match="KID"):
        eval_fid(Flatten(16), x[:16], x)  # 16 fake images in 16-d: rank-deficient covariance
    with pytest.raises(MetricError, match="KID"):
        eval_fid(Flatten(16), x, x[:10])


def test_nearest_private_pixels_exact_copy_and_classes() -> None:
    g = torch.Generator().manual_seed(4)
    private = torch.rand(6, 1, 8, 8, generator=g) * 2 - 1
    private_y = torch.tensor([0, 0, 0, 1, 1, 1])
    # Reconstruction 0 copies private 4 (class 1) but is labelled 0: it must be matched within class 0.
    images = torch.stack([private[4], private[2], private[4]])
    labels = torch.tensor([0, 0, 1])
    out = nearest_private_pixels(images, labels, private, private_y)
    assert out["index"][1:].tolist() == [2, 4]
    assert out["mse"][1:].tolist() == [0.0, 0.0]
    assert out["ssim"][1:] == pytest.approx([1.0, 1.0], abs=1e-6)
    assert out["index"][0].item() in (0, 1, 2) and out["mse"][0] > 0 and out["ssim"][0] < 0.9
    with pytest.raises(MetricError, match="class 2"):
        nearest_private_pixels(images, torch.tensor([0, 0, 2]), private, private_y)


def test_nearest_private_pixels_rgb_16px() -> None:
    private = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    out = nearest_private_pixels(private[[1]], torch.tensor([0]), private, torch.zeros(3, dtype=torch.long))
    assert out["index"].tolist() == [1] and out["mse"].item() == 0.0 and out["ssim"].item() == pytest.approx(1.0, abs=1e-6)


def test_degenerate_mask() -> None:
    images = torch.stack([torch.full((1, 8, 8), -1.0), torch.full((1, 8, 8), 0.3),
                          torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(6)) * 2 - 1])
    assert degenerate_mask(images).tolist() == [True, True, False]


def test_within_class_diversity() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    same = torch.ones(6, 4)
    result = within_class_diversity(same, labels)
    assert result["mean_pairwise"] == 0.0 and set(result["per_class"]) == {0, 1}  # class 2: one sample, skipped
    spread = torch.tensor([[0.0, 0], [3, 4], [0, 0], [0, 0], [0, 2], [9, 9]])
    result = within_class_diversity(spread, labels)
    assert result["per_class"] == pytest.approx({0: 10 / 3, 1: 2.0})
    assert result["mean_pairwise"] == pytest.approx((10 / 3 + 2) / 2)
    with pytest.raises(MetricError):
        within_class_diversity(torch.zeros(2, 4), torch.tensor([0, 1]))


def test_coverage() -> None:
    g = torch.Generator().manual_seed(7)
    real = torch.randn(20, 3, generator=g)
    real_y = torch.tensor([0] * 10 + [1] * 10)
    assert coverage(real, real_y, real, real_y, k=3) == 1.0
    assert coverage(real + 100.0, real_y, real, real_y, k=3) == 0.0
    # Only class 0 attacked and only half its samples reproduced: each real point covers at least itself.
    half = coverage(real[:5], real_y[:5], real, real_y, k=3)
    assert 0.5 <= half <= 1.0
    with pytest.raises(MetricError, match="class 1"):
        coverage(real, real_y, real[:14], real_y[:14], k=5)


def test_duplicate_rate() -> None:
    private = torch.tensor([[0.0, 0], [10, 0], [0, 10]])
    private_y = torch.zeros(3, dtype=torch.long)  # median pairwise distance 10 -> threshold 0.5
    feats = torch.tensor([[1.0, 1], [1.2, 1], [5, 5], [9, 9]])
    assert duplicate_rate(feats, torch.zeros(4, dtype=torch.long), private, private_y) == 0.5


def test_annotated_grid(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(8)
    recon, priv = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1, torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    marks = [[(True, "0.97"), (False, "0.12"), (True, "0.80")], None]
    one = save_annotated_grid([recon], tmp_path / "one.png", ["class 3 recon"], marks[:1])
    two = save_annotated_grid([recon, priv], tmp_path / "two.png", ["class 3 recon", "nearest private"], marks)
    with Image.open(one) as a, Image.open(two) as b:
        assert a.format == b.format == "PNG" and b.mode == "RGB"
        assert b.height > a.height and b.width >= a.width
        # A hit frame is green, a miss frame red; check one pixel of each on the top edge of the frames.
        pixels = b.convert("RGB")
        greens = sum(1 for x in range(b.width) if pixels.getpixel((x, 4)) == (0, 160, 0))
        reds = sum(1 for x in range(b.width) if pixels.getpixel((x, 4)) == (210, 0, 0))
        assert greens > 0 and reds > 0
    with pytest.raises(ValueError):
        save_annotated_grid([recon], tmp_path / "bad.png", ["x"], [[(True, "1")]])
