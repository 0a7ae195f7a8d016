"""Straight-through threshold and the memory gate that decides which tokens a layer updates."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class StraightThroughThreshold(torch.autograd.Function):
    """Forward: ``(x > threshold).float()``. Backward: the identity for ``x`` (straight-through)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        return (x > threshold).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output, None


def straight_through_threshold(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Binary mask ``x > threshold`` whose gradient passes to ``x`` unchanged."""
    if not (torch.is_grad_enabled() and x.requires_grad):  # a Python Function costs ~40 us a call
        return (x > threshold).to(x.dtype)
    return StraightThroughThreshold.apply(x, threshold)


class MemoryGate(nn.Module):
    """Scores each token and thresholds the score into a keep (1) / pass-through (0) mask.

    score = mix([softmax(cos(x, keys) / sqrt(D)) @ values, mlp(x)]), one scalar per token;
    gate  = 1[score > threshold] with straight-through gradients.

    Shapes: x (..., D) -> (gate (..., 1), score (..., 1)).
    """

    def __init__(self, dims: int, memory_slots: int = 64, threshold: float = 0.5) -> None:
        super().__init__()
        self.keys = nn.Parameter(torch.randn(memory_slots, dims))
        self.values = nn.Parameter(torch.randn(memory_slots, 1))
        self.mlp = nn.Sequential(nn.Linear(dims, dims // 2), nn.SiLU(), nn.Linear(dims // 2, 1))
        self.mix = nn.Linear(2, 1)
        # A buffer, not a frozen Parameter: it is state the optimiser must never see.
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys = F.normalize(self.keys, dim=-1) / math.sqrt(x.shape[-1])  # scaled here: (S, D), not (..., S)
        attention = torch.softmax(F.normalize(x, dim=-1) @ keys.T, dim=-1)
        score = self.mix(torch.cat((attention @ self.values, self.mlp(x)), dim=-1))
        return straight_through_threshold(score, self.threshold), score

    def flops(self, tokens: int) -> int:
        """Multiply-add FLOPs (x2) for ``tokens`` tokens."""
        slots, dims = self.keys.shape
        mlp = dims * (dims // 2) + dims // 2
        return 2 * tokens * (slots * dims + slots + mlp + 2)
