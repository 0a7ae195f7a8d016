"""The task interface: data splits, a model (embedding -> jump stack -> head), and per-sample loss."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from skipjump.config import StackConfig, TaskConfig
from skipjump.stack import JumpStack, JumpTrace, Routing, parameters_excluding


@dataclass
class Split:
    inputs: torch.Tensor  # (N, ...) task-specific
    targets: torch.Tensor  # (N, ...) task-specific

    def __len__(self) -> int:
        return len(self.targets)


class JumpModel(nn.Module):
    """inputs -> embed -> (B, T, D) -> JumpStack -> head -> (outputs, the stack's JumpTrace)."""

    def __init__(self, embed: nn.Module, stack: JumpStack, head: nn.Module) -> None:
        super().__init__()
        self.embed, self.stack, self.head = embed, stack, head

    def forward(self, inputs: torch.Tensor, routing: Routing | str | None = None) -> tuple[torch.Tensor, JumpTrace]:
        hidden, trace = self.stack(self.embed(inputs), routing=routing)
        return self.head(hidden), trace

    def network_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the jump policy's."""
        return parameters_excluding(self, self.stack.policy)


class Task(ABC):
    """A data set with a fixed train/test split and a model family. Subclasses add one task each."""

    name: str
    train: Split
    test: Split

    @classmethod
    @abstractmethod
    def from_config(cls, config: TaskConfig, seed: int) -> Task: ...

    @abstractmethod
    def build_model(self, stack: StackConfig) -> JumpModel: ...

    def per_sample_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B,) task loss; cross-entropy for classification."""
        return F.cross_entropy(outputs, targets, reduction="none")

    def correct(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B,) bool."""
        return outputs.argmax(dim=-1) == targets

    def confidence(self, outputs: torch.Tensor) -> torch.Tensor:
        """(B,) how sure the model is of its answer: the top softmax probability."""
        return torch.softmax(outputs, dim=-1).amax(dim=-1)
