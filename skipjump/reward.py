"""The jump policy's reward: the one definition the trainer (and any environment) uses."""

from __future__ import annotations

import typing

import torch

from skipjump.config import RewardKind
from skipjump.stack import JumpTrace

REWARDS = typing.get_args(RewardKind)


def jump_reward(
    trace: JumpTrace,
    loss: torch.Tensor,
    correct: torch.Tensor | None = None,
    *,
    kind: RewardKind = "compute_minus_loss",
    lam: float = 1.0,
    gamma: float = 5.0,
) -> torch.Tensor:
    """Per-sample reward (B,), detached.

    compute_minus_loss:  r = lam * (1 - compute_fraction) - loss
    blockdrop:           r = 1 - compute_fraction^2 if correct else -gamma   (Wu et al. 2018;
                         compute fraction in place of their block count)

    loss (B,) is each sample's task loss; correct (B,) bool is needed for blockdrop.
    """
    compute = trace.compute_fraction.detach()
    if kind == "compute_minus_loss":
        return lam * (1.0 - compute) - loss.detach()
    if kind == "blockdrop":
        if correct is None:
            raise ValueError("the blockdrop reward needs per-sample correctness")
        return torch.where(correct, 1.0 - compute.square(), torch.full_like(compute, -gamma))
    raise ValueError(f"reward kind must be one of {REWARDS}, got {kind!r}")
