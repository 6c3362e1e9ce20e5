"""Data handed to the Python API by a user: (images, labels) tensors, a Dataset or a DataLoader, turned
into the two tensors calor's training loop takes."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import DataError


def as_tensors(data: Any, what: str = "data") -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, C, H, W) float, labels (N,) int64) from a `(x, y)` pair of tensors, a map-style Dataset of
    (image, label) items, or a DataLoader yielding (images, labels) batches."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
    elif isinstance(data, torch.utils.data.DataLoader):
        xs, ys = [], []
        for batch in data:
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise DataError(f"{what}: the DataLoader must yield (images, labels) batches, got {type(batch).__name__}")
            xs.append(torch.as_tensor(batch[0]))
            ys.append(torch.as_tensor(batch[1]))
        if not xs:
            raise DataError(f"{what}: the DataLoader yielded no batches")
        x, y = torch.cat(xs), torch.cat(ys)
    elif isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
        if not items:
            raise DataError(f"{what}: the Dataset is empty")
        x = torch.stack([torch.as_tensor(item[0]) for item in items])
        y = torch.as_tensor([int(item[1]) for item in items])
    else:
        raise DataError(f"{what}: expected (images, labels) tensors, a Dataset or a DataLoader, got {type(data).__name__}")
    if x.dim() != 4:
        raise DataError(f"{what}: images must be (N, C, H, W), got shape {tuple(x.shape)}")
    if y.dim() != 1 or len(y) != len(x):
        raise DataError(f"{what}: {len(x)} images but labels of shape {tuple(y.shape)}")
    if y.is_floating_point():
        raise DataError(f"{what}: labels must be integers, got {y.dtype}")
    return x.float(), y.long()


def as_images(data: Any, what: str = "data") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (N, C, H, W) float, with their labels when the data has them: an image tensor alone, or any
    form `as_tensors` takes."""
    if isinstance(data, torch.Tensor):
        if data.dim() != 4:
            raise DataError(f"{what}: images must be (N, C, H, W), got shape {tuple(data.shape)}")
        if len(data) == 0:
            raise DataError(f"{what}: no images")
        return data.float(), None
    return as_tensors(data, what)
