"""The jump policy: logits over jump actions {0, ..., max_jump} after each layer."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from skipjump.config import PolicyInputs


class PolicyWeights(NamedTuple):
    """A JumpPolicy's parameters (:meth:`JumpPolicy.weights`)."""

    layer_embedding: torch.Tensor | None  # (L, D); None for the input policy
    hidden_weight: torch.Tensor  # (hidden, D + extra)
    hidden_bias: torch.Tensor
    out_weight: torch.Tensor  # (max_jump + 1, hidden)
    out_bias: torch.Tensor


class JumpPolicy(nn.Module):
    """features (N, D) detached, layer index -> logits (N, max_jump + 1).

    inputs="input": the seed's policy; one distribution per sample, computed from the pooled
        stack input and reused at every decision (``layer`` is ignored).
    inputs="state": computed at each decision from the pooled current hidden state plus a
        learned embedding of the layer that just ran, and ``extra`` (N, E) features when given
        (the task head's confidence on the current state: see ``JumpModel.probe``). With
        ``read_state=False`` the pooled state is not read: only the layer and ``extra``, so there
        is nothing about an input to memorise but what the head makes of it.
    dropout: on the features (the pooled state or input), in training mode only: policy steps, and
        supervised steps that sample the policy's paths.
    greedy_price: what greedy decoding charges per layer skipped, in logits (a buffer; 0: plain argmax):
        it picks argmax_a logits[a] + greedy_price * a, so a price > 0 skips more, one < 0 skips less
        (``skipjump.budget`` sets it so that greedy meets a compute budget).
    """

    def __init__(
        self,
        dims: int,
        num_layers: int,
        max_jump: int = 2,
        hidden: int = 128,
        inputs: PolicyInputs = "state",
        extra: int = 0,
        read_state: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.inputs, self.extra, self.read_state = inputs, extra, read_state
        self.dropout = dropout
        self.layer_embedding = nn.Embedding(num_layers, dims) if inputs == "state" else None
        if self.layer_embedding is not None:
            nn.init.zeros_(self.layer_embedding.weight)
        self.net = nn.Sequential(nn.Linear(dims + extra, hidden), nn.SiLU(), nn.Linear(hidden, max_jump + 1))
        self.register_buffer("greedy_price", torch.tensor(0.0))

    def forward(self, features: torch.Tensor, layer: int = 0, extra: torch.Tensor | None = None) -> torch.Tensor:
        return self.logits(self.weights(), features, layer, extra)

    def weights(self) -> PolicyWeights:
        """The parameters, looked up once: a routed pass reads them at every decision, where looking up
        these module attributes took half the policy's time at batch 1 (about 1 us each)."""
        first, _, last = self.net
        embedding = None if self.layer_embedding is None else self.layer_embedding.weight
        return PolicyWeights(embedding, first.weight, first.bias, last.weight, last.bias)

    def logits(
        self, weights: PolicyWeights, features: torch.Tensor, layer: int = 0, extra: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``forward`` with the parameters from :meth:`weights`."""
        if not self.read_state:
            features = torch.zeros_like(features)
        if self.training and self.dropout > 0:
            features = F.dropout(features, self.dropout)
        if weights.layer_embedding is not None:
            features = features + weights.layer_embedding[layer]
        if extra is not None:
            features = torch.cat([features, extra], dim=-1)
        hidden = F.silu(F.linear(features, weights.hidden_weight, weights.hidden_bias))
        return F.linear(hidden, weights.out_weight, weights.out_bias)

    def flops(self, tokens: int) -> int:
        """FLOPs of one call for one sample: pooling ``tokens`` tokens, then the MLP."""
        first, last = self.net[0], self.net[2]
        return tokens * (first.in_features - self.extra) + 2 * (first.weight.numel() + last.weight.numel())
