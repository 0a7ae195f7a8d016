"""Which update each step makes, on which training rows, and which decisions the policy may take.

Phases (``trainer.schedule``):
    alternate  ``warmup_steps`` supervised steps, then cycles of ``supervised_steps`` supervised
               and ``policy_steps`` policy steps
    joint      after the warm-up, each step updates both from one forward pass
    sequential the warm-up trains the network, then every step trains the policy on that fixed network

Rows: with ``policy_holdout`` > 0, policy steps read a held-out part of the training split that
supervised steps never touch (on rows the network has memorised every path's loss is ~0 and the
reward would see only compute); ``policy_rows=all`` lets them read the network's rows too, for a
reward that reads no label (``agent.teacher=full_depth`` or ``full_depth_answer``). Curriculum: with
``curriculum_steps`` > 0 the policy's decisions unlock from the last layer backwards, one per
``curriculum_steps`` policy updates.
"""

from __future__ import annotations

from typing import Literal

import torch

from skipjump.config import TrainerConfig
from skipjump.stack import Routing

Phase = Literal["supervised", "policy", "joint"]


class BatchSampler:
    """Reshuffled epochs over ``size`` indices from its own generator (so it can be checkpointed)."""

    def __init__(self, size: int, batch_size: int, seed: int) -> None:
        self.size, self.batch_size = size, min(batch_size, size)
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(size, generator=self.generator)
        self.position = 0

    def next(self) -> torch.Tensor:
        if self.position + self.batch_size > self.size:
            self.order = torch.randperm(self.size, generator=self.generator)
            self.position = 0
        batch = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return batch

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.position = state["order"], state["position"]


class Schedule:
    """``batch``: rows per step over all ranks (default ``batch_size``); each rank takes its shard."""

    def __init__(
        self, config: TrainerConfig, train_rows: int, num_layers: int, seed: int, batch: int | None = None
    ) -> None:
        self.config, self.num_layers = config, num_layers
        order = torch.randperm(train_rows, generator=torch.Generator().manual_seed(seed))
        held = min(round(config.policy_holdout * train_rows), train_rows - 1)
        self.held_out_rows = order[:held] if held > 0 else order  # indices into the training split
        self.network_rows = order[held:]
        self.policy_rows = order if config.policy_rows == "all" else self.held_out_rows
        batch = batch or config.batch_size
        self.network_sampler = BatchSampler(len(self.network_rows), batch, seed)
        self.policy_sampler = BatchSampler(len(self.policy_rows), batch, seed + 1)

    def phase(self, step: int) -> Phase:
        t = self.config
        if step < t.warmup_steps:
            return "supervised"
        if t.schedule == "joint":
            return "joint"
        if t.schedule == "sequential":
            return "policy"
        cycle = (step - t.warmup_steps) % (t.supervised_steps + t.policy_steps)
        return "supervised" if cycle < t.supervised_steps else "policy"

    def next_rows(self, phase: Phase) -> torch.Tensor:
        """The training-split indices of the next batch for ``phase``."""
        if phase == "policy":
            return self.policy_rows[self.policy_sampler.next()]
        return self.network_rows[self.network_sampler.next()]

    def first_decision(self, policy_updates: int) -> int:
        """The first layer whose decision the policy makes; earlier decisions run the next layer."""
        steps = self.config.curriculum_steps
        last_decision = self.num_layers - 3  # the last one that can change the path (after L - 2: none)
        return 0 if steps == 0 else max(0, last_decision - policy_updates // steps)

    def supervised_routing(self, policy_updates: int, step: int) -> Routing:
        t = self.config
        if step < t.full_depth_steps:
            return Routing("full")
        policy_paths = Routing("sample", first_decision=self.first_decision(policy_updates))
        if t.supervised_path == "full_and_policy":  # full depth through the warm-up, then one cycle each in turn
            return policy_paths if policy_updates % 2 else Routing("full")
        if t.supervised_path == "full":
            return Routing("full")
        if t.supervised_path == "random":
            return Routing("random", p=t.random_p)
        return policy_paths

    def state_dict(self) -> dict:
        return {"network": self.network_sampler.state_dict(), "policy": self.policy_sampler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.network_sampler.load_state_dict(state["network"])
        self.policy_sampler.load_state_dict(state["policy"])
