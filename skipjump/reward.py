"""The jump policy's reward: the one definition the trainer (and any environment) uses."""

from __future__ import annotations

import typing

import torch

from skipjump.config import RewardKind, Teacher
from skipjump.stack import JumpTrace, Routing

if typing.TYPE_CHECKING:
    from skipjump.tasks import JumpModel, Task

REWARDS = typing.get_args(RewardKind)


@torch.no_grad()
def teacher_reference(model: JumpModel, teacher: Teacher, inputs: torch.Tensor) -> torch.Tensor | None:
    """(B, ...) the full-depth outputs of ``inputs`` that the full_depth teachers compare with; None for labels."""
    return None if teacher == "labels" else model(inputs, Routing("full"))[0]


@torch.no_grad()
def reward_loss(
    task: Task,
    model: JumpModel,
    teacher: Teacher,
    inputs: torch.Tensor,
    outputs: torch.Tensor,
    task_loss: torch.Tensor,
    reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """(K * B,) the reward's loss term for ``outputs``, K blocks of the B ``inputs``' rows (as a routing
    with K samples orders them), detached: ``task_loss`` under the labels teacher; under full_depth each
    row's divergence from its input's full-depth output, ``reference`` (B, ...) (run here if not given);
    under full_depth_answer 1.0 where the row's answer differs from that output's, else 0.0."""
    if teacher == "labels":
        return task_loss.detach()
    if reference is None:
        reference = teacher_reference(model, teacher, inputs)
    reference = reference.repeat(len(outputs) // len(reference), *[1] * (reference.dim() - 1))
    if teacher == "full_depth_answer":  # bounded: only a changed answer costs, and never more than 1
        return (~task.correct(outputs, reference.argmax(dim=-1))).float()
    return task.divergence(outputs, reference)


def jump_reward(
    trace: JumpTrace,
    loss: torch.Tensor,
    correct: torch.Tensor | None = None,
    *,
    kind: RewardKind = "compute_minus_loss",
    lam: float = 1.0,
    gamma: float = 5.0,
    loss_cap: float | None = None,
) -> torch.Tensor:
    """Per-sample reward (B,), detached.

    compute_minus_loss:  r = lam * (1 - compute_fraction) - min(loss, loss_cap)
    compute_minus_error: r = lam * (1 - compute_fraction) - (0 if correct else 1)
    blockdrop:           r = 1 - compute_fraction^2 if correct else -gamma   (Wu et al. 2018;
                         compute fraction in place of their block count)

    loss (B,) is each sample's task loss, or under ``agent.teacher=full_depth`` its path's divergence
    from full depth; correct (B,) bool is needed for the last two. A loss cap
    bounds the penalty of a confidently wrong answer, which compute saved (at most lam) can
    never outweigh otherwise.
    """
    compute = trace.compute_fraction.detach()
    if kind in ("compute_minus_error", "blockdrop") and correct is None:
        raise ValueError(f"the {kind} reward needs per-sample correctness")
    if kind == "compute_minus_loss":
        penalty = loss.detach() if loss_cap is None else loss.detach().clamp(max=loss_cap)
        return lam * (1.0 - compute) - penalty
    if kind == "compute_minus_error":
        return lam * (1.0 - compute) - (~correct).to(compute.dtype)
    if kind == "blockdrop":
        return torch.where(correct, 1.0 - compute.square(), torch.full_like(compute, -gamma))
    raise ValueError(f"reward kind must be one of {REWARDS}, got {kind!r}")
