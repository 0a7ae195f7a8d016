"""8x8 handwritten digits (bundled with scikit-learn) as a sequence of square patches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from skipjump.config import ConfigError, StackConfig, TaskConfig
from skipjump.stack import JumpStack
from skipjump.tasks.base import JumpModel, Split, Task


class DataError(ValueError):
    """Malformed task data; the message names the file and the problem."""


def load_digits_arrays(data_file: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """images (N, 8, 8) float in [0, 1], labels (N,) int in 0..9, from scikit-learn or an .npz."""
    if data_file is None:
        from sklearn.datasets import load_digits

        data = load_digits()
        return data.images.astype(np.float32) / 16.0, data.target.astype(np.int64)
    path = Path(data_file)
    try:
        with np.load(path) as archive:
            missing = [name for name in ("images", "labels") if name not in archive.files]
            if missing:
                raise DataError(f"{path}: missing array '{missing[0]}'; expected 'images' (N, 8, 8) and 'labels' (N,)")
            images, labels = archive["images"], archive["labels"]
    except DataError:
        raise
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise DataError(f"{path}: cannot read as .npz ({type(error).__name__})") from None
    if images.ndim != 3 or images.shape[1:] != (8, 8) or len(images) == 0:
        raise DataError(f"{path}: 'images' must have shape (N > 0, 8, 8), got {images.shape}")
    if labels.shape != (len(images),):
        raise DataError(f"{path}: 'labels' must have shape ({len(images)},), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: 'labels' must be integers in 0..9")
    images = images.astype(np.float32)
    if not np.isfinite(images).all():
        raise DataError(f"{path}: 'images' holds NaN or infinite values")
    scale = 16.0 if images.max() > 1.0 else 1.0  # raw scikit-learn intensities are 0..16
    return images / scale, labels.astype(np.int64)


def to_patches(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(N, 8, 8) -> (N, (8 / patch)^2, patch^2), row-major patches."""
    n = images.shape[0]
    grid = 8 // patch
    return images.reshape(n, grid, patch, grid, patch).permute(0, 1, 3, 2, 4).reshape(n, grid * grid, patch * patch)


def from_patches(patches: torch.Tensor, patch: int) -> torch.Tensor:
    """The inverse of :func:`to_patches`: (N, (8 / patch)^2, patch^2) -> (N, 8, 8)."""
    n, grid = patches.shape[0], 8 // patch
    return patches.reshape(n, grid, grid, patch, patch).permute(0, 1, 3, 2, 4).reshape(n, 8, 8)


class PatchEmbedding(nn.Module):
    """(N, T, patch^2) -> (N, T, D): linear projection plus a learned position embedding."""

    def __init__(self, patch_dims: int, tokens: int, dims: int) -> None:
        super().__init__()
        self.project = nn.Linear(patch_dims, dims)
        self.position = nn.Parameter(torch.randn(tokens, dims) * 0.02)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.project(patches) + self.position


class MeanPoolClassifier(nn.Module):
    """(N, T, D) -> (N, classes)."""

    def __init__(self, dims: int, classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dims)
        self.out = nn.Linear(dims, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(x).mean(dim=1))


class DigitsTask(Task):
    name = "digits"

    def __init__(self, seed: int = 0, patch: int = 2, test_fraction: float = 0.2, data_file: str | None = None):
        if patch not in (1, 2, 4, 8):
            raise ConfigError(f"task.patch: got {patch}, allowed: 1, 2, 4, 8 (it must divide 8)")
        images, labels = load_digits_arrays(data_file)
        if len(images) < 2:
            raise DataError(f"{data_file}: need at least 2 images for a train/test split, got {len(images)}")
        self.patch = patch
        order = np.random.default_rng(seed).permutation(len(images))
        n_test = min(max(1, round(test_fraction * len(images))), len(images) - 1)
        inputs = to_patches(torch.from_numpy(images), patch)
        targets = torch.from_numpy(labels)
        test, train = torch.from_numpy(order[:n_test]), torch.from_numpy(order[n_test:])
        self.train = Split(inputs[train], targets[train])
        self.test = Split(inputs[test], targets[test])

    @classmethod
    def from_config(cls, config: TaskConfig, seed: int) -> DigitsTask:
        return cls(seed, config.patch, config.test_fraction, config.data_file)

    def augment(self, inputs: torch.Tensor, probability: float) -> torch.Tensor:
        """(B, T, patch^2) -> the same rows, each with ``probability`` shifted by one pixel in one of
        the 8 directions (zeros fill the edge it leaves; a vertical shift cuts a row of ink, since
        the digits span all 8 rows, a horizontal one almost none)."""
        images = from_patches(inputs, self.patch)
        padded = torch.nn.functional.pad(images, (1, 1, 1, 1))
        shift = torch.randint(8, (len(images),))
        shift = torch.where(torch.rand(len(images)) < probability, shift + (shift >= 4).long(), 4)  # 4: no shift
        out = images.clone()
        for s in shift[shift != 4].unique().tolist():  # (dy, dx) = divmod(s, 3) - 1
            rows, (dy, dx) = shift == s, divmod(s, 3)
            out[rows] = padded[rows, dy : dy + 8, dx : dx + 8]
        return to_patches(out, self.patch)

    def build_model(self, stack: StackConfig) -> JumpModel:
        tokens = (8 // self.patch) ** 2
        return JumpModel(
            PatchEmbedding(self.patch**2, tokens, stack.dims), JumpStack(stack), MeanPoolClassifier(stack.dims, 10)
        )
