"""k-hop pointer chasing: a generated task whose needed depth varies per input, known by construction.

A sample holds a random permutation ``perm`` of P positions, a start position s and a hop count k
drawn per sample from 1..max_hops; the answer is perm applied k times to s. Tokens: P pointer
tokens (value perm[i] at position i) and one query token (s and k); the head reads the query
token. Attention can follow one pointer per layer, or compose pointers (perm∘perm) to go faster,
so the layers a sample needs grow with k but not one for one: the evaluation measures them.

Training draws fresh samples every step (a fixed split is memorised long before the task is
learned); the batch of step t comes from a generator seeded with (seed, t), so a resumed run
draws the same batches as an unbroken one. ``train`` (the rows static_matched, cascade_matched
and oracle imitation use) and ``test`` are fixed sets drawn from a stream of their own. With P = 8
there are 8! * 8 * 6 = 1.9M possible inputs, so a run's batches (5000 x 128 = 640K draws)
contain about 28% of them: held apart by the generator, not disjoint.
"""

from __future__ import annotations

import torch
from torch import nn

from skipjump.config import StackConfig, TaskConfig
from skipjump.stack import JumpStack
from skipjump.tasks.base import JumpModel, Split, Task


def follow(perm: torch.Tensor, start: torch.Tensor, hops: torch.Tensor) -> torch.Tensor:
    """perm (N, P), start (N,), hops (N,) -> (N,) the position reached after ``hops`` pointer hops."""
    position = start.clone()
    for hop in range(int(hops.max()) if hops.numel() else 0):
        moving = hops > hop
        position = torch.where(moving, perm.gather(1, position[:, None]).squeeze(1), position)
    return position


def generate(rows: int, positions: int, max_hops: int, generator: torch.Generator) -> Split:
    """``rows`` samples: inputs (rows, P + 2) long = [perm_0 .. perm_P-1, start, k], targets (rows,),
    difficulty (rows,) = k."""
    perm = torch.rand(rows, positions, generator=generator).argsort(dim=1)
    start = torch.randint(positions, (rows,), generator=generator)
    hops = torch.randint(1, max_hops + 1, (rows,), generator=generator)
    inputs = torch.cat([perm, start[:, None], hops[:, None]], dim=1)
    return Split(inputs, follow(perm, start, hops), difficulty=hops)


class PointerEmbedding(nn.Module):
    """(N, P + 2) long -> (N, P + 1, D): P pointer tokens and one query token, each with a position."""

    def __init__(self, positions: int, max_hops: int, dims: int) -> None:
        super().__init__()
        self.positions = positions
        self.value = nn.Embedding(positions, dims)  # a pointer token's target
        self.start = nn.Embedding(positions, dims)  # the query's start position
        self.hops = nn.Embedding(max_hops + 1, dims)  # the query's k
        self.position = nn.Parameter(
            torch.randn(positions + 1, dims)
        )  # as strong as the values: pointers are positions

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        p = self.positions
        pointers = self.value(inputs[:, :p])
        query = self.start(inputs[:, p]) + self.hops(inputs[:, p + 1])
        return torch.cat([pointers, query[:, None]], dim=1) + self.position


class QueryHead(nn.Module):
    """(N, T, D) -> (N, classes), read from the last (query) token."""

    def __init__(self, dims: int, classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dims)
        self.out = nn.Linear(dims, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(x[:, -1]))


class KHopTask(Task):
    name = "khop"
    generated = True

    def __init__(
        self, seed: int = 0, positions: int = 8, max_hops: int = 6, train_rows: int = 4096, test_rows: int = 2048
    ) -> None:  # ranges are checked with the rest of the config
        self.seed, self.positions, self.max_hops = seed, positions, max_hops
        generator = torch.Generator().manual_seed(10_007 * seed + 1)  # apart from every step's stream
        self.train = generate(train_rows, positions, max_hops, generator)
        self.test = generate(test_rows, positions, max_hops, generator)

    @classmethod
    def from_config(cls, config: TaskConfig, seed: int) -> KHopTask:
        return cls(seed, config.positions, config.max_hops, config.train_rows, config.test_rows)

    def draw(self, rows: int, step: int) -> Split:
        """Fresh training samples for ``step``: the same for the same (seed, step), new for every step."""
        generator = torch.Generator().manual_seed(1_000_003 * (self.seed + 1) + step)
        return generate(rows, self.positions, self.max_hops, generator)

    def build_model(self, stack: StackConfig) -> JumpModel:
        embed = PointerEmbedding(self.positions, self.max_hops, stack.dims)
        return JumpModel(embed, JumpStack(stack), QueryHead(stack.dims, self.positions))
