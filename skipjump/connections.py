"""Mini hyper-connections: parallel linear pathways mixed per token by softmax weights."""

from __future__ import annotations

import torch
from torch import nn


class MiniHyperConnection(nn.Module):
    """relu(sum_k w_k(x) * W_k x), with w(x) = softmax(mixer(x)) per token.

    Shapes: x (..., D) -> (..., D). The mixing weights have shape (..., K) and broadcast over D.
    """

    def __init__(self, dims: int, expansion: int = 2) -> None:
        super().__init__()
        if expansion < 1:
            raise ValueError(f"expansion must be >= 1, got {expansion}")
        self.expansion = expansion
        # One Linear computes all K pathways at once: the same maths as K Linears, one matmul.
        self.pathways = nn.Linear(dims, dims * expansion)
        self.mixer = nn.Linear(dims, expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        paths = self.pathways(x).unflatten(-1, (self.expansion, -1))  # (..., K, D)
        weights = torch.softmax(self.mixer(x), dim=-1).unsqueeze(-1)  # (..., K, 1)
        # Seed fix: the weights were (B, T) against (B, T, D) features, i.e. the wrong axis.
        return torch.relu((weights * paths).sum(dim=-2))

    def flops(self, tokens: int) -> int:
        dims = self.mixer.in_features
        k = self.expansion
        return 2 * tokens * (dims * dims * k + dims * k + dims * k)
