"""The task interface: data splits, a model (embedding -> jump stack -> head), and per-sample loss."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from skipjump.config import StackConfig, TaskConfig
from skipjump.stack import JumpStack, JumpTrace, Probe, Routing, parameters_excluding


@dataclass
class Split:
    inputs: torch.Tensor  # (N, ...) task-specific
    targets: torch.Tensor  # (N, ...) task-specific
    difficulty: torch.Tensor | None = None  # (N,) long, where the task knows it by construction (k-hop: k)

    def __len__(self) -> int:
        return len(self.targets)

    def rows(self, index: torch.Tensor) -> Split:
        """The rows ``index`` (N',) of this split, difficulty included."""
        difficulty = None if self.difficulty is None else self.difficulty[index]
        return Split(self.inputs[index], self.targets[index], difficulty)


class JumpModel(nn.Module):
    """inputs -> embed -> (B, T, D) -> JumpStack -> head -> (outputs, the stack's JumpTrace)."""

    def __init__(self, embed: nn.Module, stack: JumpStack, head: nn.Module) -> None:
        super().__init__()
        self.embed, self.stack, self.head = embed, stack, head

    @property
    def device(self) -> torch.device:
        return self.stack.work_memory.device

    def forward(self, inputs: torch.Tensor, routing: Routing | str | None = None) -> tuple[torch.Tensor, JumpTrace]:
        x = self.embed(inputs)
        probe = Probe(self.probe, self.probe_flops(x.shape[1])) if self.stack.config.policy_confidence else None
        hidden, trace = self.stack(x, routing=routing, probe=probe)
        return self.head(hidden), trace

    @torch.no_grad()
    def probe(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(N, T, D) -> (N, 2): the head's top probability and normalised entropy on an
        intermediate state (a logit lens: the head skips the final gated MLP it was trained
        behind, so this is a signal of confidence, not the output a jump would give)."""
        probs = torch.softmax(self.head(hidden), dim=-1)
        entropy = -(probs * probs.clamp(min=1e-12).log()).sum(dim=-1) / math.log(probs.shape[-1])
        return torch.stack([probs.amax(dim=-1), entropy], dim=-1)

    def probe_flops(self, tokens: int) -> float:
        """FLOPs of one ``probe`` call for one sample, an upper bound: the head's matmuls and a pass
        over every token (a head reading one token, as k-hop's, costs less)."""
        weights = sum(m.weight.numel() for m in self.head.modules() if isinstance(m, nn.Linear))
        return 2.0 * weights + tokens * self.stack.config.dims

    def network_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the jump policy's."""
        return parameters_excluding(self, self.stack.policy)


class Task(ABC):
    """A data set with a fixed train/test split and a model family. Subclasses add one task each.

    A ``generated`` task draws fresh training samples for every step (``draw``) instead of
    cycling ``train``; its ``train`` rows are then used only to choose references.
    """

    name: str
    train: Split
    test: Split
    generated: bool = False

    @classmethod
    @abstractmethod
    def from_config(cls, config: TaskConfig, seed: int) -> Task: ...

    @abstractmethod
    def build_model(self, stack: StackConfig) -> JumpModel: ...

    def draw(self, rows: int, step: int) -> Split:
        """Fresh training samples for ``step`` (generated tasks only)."""
        raise NotImplementedError(f"task {self.name!r} has a fixed training split; it draws no samples")

    def augment(self, inputs: torch.Tensor, probability: float) -> torch.Tensor:
        """A copy of ``inputs`` (B, ...) with each row, with ``probability``, perturbed in a way that keeps its
        label (tasks that define one; drawn from the global torch generator)."""
        raise NotImplementedError(f"task {self.name!r} defines no augmentation; set trainer.policy_augment=0")

    def per_sample_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B,) task loss; cross-entropy for classification."""
        return F.cross_entropy(outputs, targets, reduction="none")

    def divergence(self, outputs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B,) how far ``outputs`` moved from ``reference`` outputs of the same inputs:
        KL(softmax(reference) || softmax(outputs)) for classification."""
        log_p, log_q = F.log_softmax(outputs.float(), dim=-1), F.log_softmax(reference.float(), dim=-1)
        return F.kl_div(log_p, log_q, reduction="none", log_target=True).sum(dim=-1)

    def correct(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B,) bool."""
        return outputs.argmax(dim=-1) == targets

    def confidence(self, outputs: torch.Tensor) -> torch.Tensor:
        """(B,) how sure the model is of its answer: the top softmax probability."""
        return torch.softmax(outputs, dim=-1).amax(dim=-1)
