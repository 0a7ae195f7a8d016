"""Data-parallel training across the processes torchrun starts, and the device each one uses.

    torchrun --standalone --nproc_per_node=N experiments/train.py --config ...

Every rank holds the whole model. All ranks draw the same global batch of N * ``batch_size``
rows from the same seeded sampler, and rank r keeps rows [r * b, (r + 1) * b): N ranks at batch
b see what one rank sees at batch N * b. Jump paths are sampled from each rank's own stream.

Gradients are averaged by hand after backward (one flat all-reduce of the group the step
updates, as CleanRL's multi-GPU PPO does), not by the DistributedDataParallel wrapper: the
trainer updates the network and the policy in different steps and freezes the other group by
toggling ``requires_grad``, which a DDP wrapper does not allow after construction, and a layer
that every sample on one rank skipped has no gradient there, which DDP handles only with
``find_unused_parameters=True`` (a walk of the autograd graph every step). Here such a parameter
contributes zeros, as under DDP, and one left unused on every rank keeps no gradient, as under
DDP. The cost against DDP: the all-reduce starts after backward instead of overlapping it.

Launched without torchrun (no ``WORLD_SIZE`` in the environment), :func:`setup` returns one rank
whose collectives do nothing, so the trainer has a single code path.
"""

from __future__ import annotations

import datetime
import importlib
import os
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from skipjump.checkpoint import seed_everything
from skipjump.config import ConfigError, Device

T = TypeVar("T")


def pick_device(choice: Device = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: the local rank's GPU when CUDA is present, else the CPU."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.device: cuda, but this torch {torch.__version__} sees no CUDA device; use auto or cpu"
        )
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if local_rank >= torch.cuda.device_count():  # two ranks on one GPU: nccl refuses or hangs
        raise ConfigError(
            f"trainer.device: local rank {local_rank} but {torch.cuda.device_count()} GPUs on this machine;"
            " start at most one rank per GPU (--nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


@dataclass(frozen=True)
class Ranks:
    """This process's rank among ``world`` and its device; every collective is a no-op when world = 1."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """Rank 0: the one that logs, evaluates and writes checkpoints."""
        return self.rank == 0

    def shard(self, rows: int) -> slice:
        """This rank's rows of a global batch of ``rows`` (a multiple of world)."""
        size = rows // self.world
        return slice(self.rank * size, (self.rank + 1) * size)

    def seed_paths(self, seed: int, step: int = 0) -> None:
        """Give ranks > 0 random streams of their own (rank 0 keeps the single-process stream, which a
        checkpoint holds for the CPU only). ``step``: where a resumed run starts, so that a rank's
        stream differs from the one before."""
        if self.rank > 0 or (step > 0 and self.device.type == "cuda"):
            seed_everything(int(np.random.SeedSequence([seed, self.rank, step]).generate_state(1)[0]))

    def average_gradients(self, params: list[nn.Parameter]) -> None:
        """Average the gradients of ``params`` over ranks in one all-reduce. A parameter without a
        gradient here counts as zeros; one without a gradient on every rank keeps none."""
        if self.world == 1:
            return
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        used = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype, device=grads[0].device)
        flat = torch.cat([*(g.flatten() for g in grads), used])
        dist.all_reduce(flat)
        *parts, used = flat.split([p.numel() for p in params] + [len(params)])
        for p, part, anywhere in zip(params, parts, used.tolist()):
            p.grad = part.view_as(p).div_(self.world) if anywhere else None

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """(n, ...) on every rank -> (world * n, ...) in rank order, detached; every rank passes the same shape."""
        if self.world == 1:
            return tensor.detach()
        local = tensor.detach().contiguous()
        local = local.to(torch.uint8) if local.dtype == torch.bool else local  # gloo gathers no bools
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local)
        return torch.cat(parts).to(tensor.dtype)

    def agree(self, stats: dict[str, float], stop_signal: int | None) -> tuple[dict[str, float], int | None]:
        """The step's statistics averaged over ranks, and a stop signal any rank received: in one
        collective, so every rank stops after the same step and none is left waiting."""
        if self.world == 1:
            return stats, stop_signal
        keys = sorted(stats)
        local = torch.tensor([stats[k] for k in keys] + [float(stop_signal or 0)], dtype=torch.float64)
        gathered = self.gather(local.to(self.device)).view(self.world, -1).cpu()
        signal = int(gathered[:, -1].max())
        return dict(zip(keys, gathered[:, :-1].mean(dim=0).tolist())), signal or None

    def broadcast(self, *modules: nn.Module) -> None:
        """Copy rank 0's parameters and buffers into every rank's ``modules``."""
        if self.world == 1:
            return
        for module in modules:
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    def first_error(self, message: str | None) -> str | None:
        """The first rank's error message, or None when every rank passes None: so that a problem on
        one rank (a run directory rank 0 cannot write) stops every rank, none left in a collective."""
        if self.world == 1:
            return message
        messages: list[str | None] = [None] * self.world
        dist.all_gather_object(messages, message)
        return next((m for m in messages if m is not None), None)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def share(self, value: T) -> T:
        """Rank 0's ``value`` (a small picklable object, e.g. the run directory's name) on every rank."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def setup(device: Device = "auto") -> Ranks:
    """Join torchrun's process group (nccl on GPUs, gloo on CPUs) when launched by it, else one rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = pick_device(device, local_rank)
    if world == 1:
        return Ranks(device=chosen)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    # torch.optim imports torch._dynamo when the first optimiser is built. Imported after the group
    # exists, it keeps references to the group that destroy_process_group cannot drop: gloo's threads
    # then outlive teardown, and one that frees a tensor while Python exits aborts the process
    # now and then (SIGABRT). Imported first, it holds no group, and teardown joins the threads.
    importlib.import_module("torch._dynamo")
    # Ranks > 0 wait in a collective while rank 0 evaluates or saves: give that an hour, not nccl's 10 minutes.
    dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=1))
    return Ranks(dist.get_rank(), dist.get_world_size(), chosen)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
