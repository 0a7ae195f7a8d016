"""The three updates a trainer schedules, their optimisers and their checks.

    supervised  trains the network (never the policy) on the paths of a given routing
    policy      freezes the network (no network gradients are computed) and applies REINFORCE to
                the policy, on K sampled paths per input for leave-one-out (``agent.estimator:
                exact``: on every path of a few inputs, weighted by its probability)
    joint       both from one forward pass: the network trains on the policy's sampled paths

Each returns statistics to log and the trace of the forward pass it learned from. A NaN or
infinite loss, reward or gradient raises :class:`NonFiniteError` before any parameter moves.
Under torchrun each rank computes its shard's gradients and they are averaged before a step
(:meth:`Ranks.average_gradients`); the agent's batch statistics cover every rank's samples.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from skipjump.agent import ReinforceAgent
from skipjump.checkpoint import load_module_state
from skipjump.config import Config, ConfigError
from skipjump.distributed import Ranks
from skipjump.evaluate import TASK_METRICS
from skipjump.path_scores import MAX_PATHS
from skipjump.paths import count_paths, enumerate_paths, paths_to_actions
from skipjump.reward import jump_reward, reward_loss, teacher_reference
from skipjump.stack import JumpTrace, Routing
from skipjump.tasks.base import JumpModel, Task


class NonFiniteError(RuntimeError):
    """A NaN or infinite loss, reward, gradient or parameter; the message names the quantity."""


def check_finite(name: str, value: torch.Tensor) -> None:
    if not bool(torch.isfinite(value).all()):
        raise NonFiniteError(f"non-finite {name} ({value.flatten()[:4].tolist()})")


@contextlib.contextmanager
def frozen(params: list[torch.nn.Parameter]) -> Iterator[None]:
    """Temporarily stop autograd from tracking ``params``."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


class Updates:
    """Supervised, policy and joint updates of ``model``; holds the agent and both optimisers."""

    def __init__(self, config: Config, task: Task, model: JumpModel, ranks: Ranks | None = None) -> None:
        self.config, self.task, self.model = config, task, model
        self.ranks = ranks or Ranks()
        t, a = config.trainer, config.agent
        self.agent = ReinforceAgent(a, config.model.dims, gather=self.ranks.gather).to(self.ranks.device)
        self.network_params = model.network_parameters()
        self.policy_params = list(model.stack.policy.parameters()) + list(self.agent.parameters())
        # fused: one kernel for all ~200 small tensors; the per-tensor loop took a quarter of a
        # demo supervised step (CPU fused Adam needs torch >= 2.4)
        self.network_optimizer = torch.optim.AdamW(
            self.network_params, lr=t.lr, weight_decay=t.weight_decay, fused=True
        )
        self.policy_optimizer = torch.optim.AdamW(self.policy_params, lr=a.lr, weight_decay=a.weight_decay, fused=True)
        self.path_actions = None  # estimator exact: (P, L - 1) actions of every path
        if a.estimator == "exact":
            layers, max_jump = config.model.num_layers, config.model.max_jump
            count = count_paths(layers, max_jump)
            if count > MAX_PATHS:
                raise ConfigError(
                    f"agent.estimator: exact runs every path, and {layers} layers with max_jump {max_jump} have"
                    f" {count} (at most {MAX_PATHS}); set agent.estimator=sampled"
                )
            self.path_actions = paths_to_actions(enumerate_paths(layers, max_jump), layers, max_jump)

    # -- pieces ----------------------------------------------------------------------------

    def _autocast(self) -> torch.autocast:
        """bfloat16 autocast for training forward passes when ``trainer.precision`` is bf16."""
        bf16 = self.config.trainer.precision == "bf16"
        return torch.autocast(self.ranks.device.type, dtype=torch.bfloat16, enabled=bf16)

    def _train_mode(self) -> None:
        if not self.model.training:  # train() walks every submodule: ~1 ms a step when repeated
            self.model.train()

    def _check_local(self, name: str, value: torch.Tensor) -> None:
        """Raise on a NaN or infinite ``value`` from this rank's batch. Under torchrun it is left to
        reach the gradients instead, whose averaged norm every rank checks at the same point
        (:meth:`_step`): no rank raises alone and leaves the others waiting in a collective."""
        if self.ranks.world == 1:
            check_finite(name, value)

    def _step(self, params: list, optimizer: torch.optim.Optimizer, clip: float, name: str) -> None:
        self.ranks.average_gradients(params)
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf, foreach=True)
        where = "" if self.ranks.world == 1 else " over all ranks (a loss, reward or gradient of some rank)"
        check_finite(f"{name} gradient norm{where}", norm)
        optimizer.step()

    def _step_policy(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` into the policy (the network is frozen by the caller) and step it."""
        self.policy_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._step(self.policy_params, self.policy_optimizer, self.config.agent.grad_clip, "policy")

    def _task_stats(self, prefix: str, outputs, targets, loss, trace: JumpTrace) -> dict[str, float]:
        """train/ for the paths the network trained on, policy/ for the paths the policy sampled."""
        values = {
            "loss": float(loss.detach().mean()),
            "accuracy": float(self.task.correct(outputs, targets).float().mean()),
            "compute_fraction": float(trace.compute_fraction.mean()),
            "layers_mean": float(trace.layers_executed.float().mean()),
            "unique_paths": trace.unique_paths(),
        }
        return {f"{prefix}/{key}": values[key] for key in TASK_METRICS}

    def _reference(self, inputs: torch.Tensor) -> torch.Tensor | None:
        return teacher_reference(self.model, self.config.agent.teacher, inputs)

    def _score(self, outputs, targets, trace: JumpTrace, inputs: torch.Tensor, reference: torch.Tensor | None):
        """Per-sample task loss (N,) and reward (N,) of one forward pass over K blocks of ``inputs``
        (N = K * B); ``reference``: their full-depth outputs under the full_depth teacher (see reward_loss)."""
        a = self.config.agent
        loss = self.task.per_sample_loss(outputs, targets)
        self._check_local("task loss", loss)
        correct = self.task.correct(outputs, targets)
        penalty = reward_loss(self.task, self.model, a.teacher, inputs, outputs, loss, reference)
        rewards = jump_reward(
            trace, penalty, correct, kind=a.reward, lam=float(self.agent.lam), gamma=a.gamma, loss_cap=a.loss_cap
        )
        self._check_local("reward", rewards)
        return loss, rewards

    def _exact_policy_loss(self, inputs: torch.Tensor, targets: torch.Tensor, first_decision: int):
        """Run every path of the batch's first ``exact_inputs`` inputs, build the exact loss:
        (loss, stats, task loss and trace of one path per input drawn from the policy)."""
        n = min(self.config.agent.exact_inputs, len(inputs))
        inputs, targets = inputs[:n], targets[:n]
        table = self.path_actions.to(inputs.device)
        if first_decision > 0:  # the curriculum runs the next layer before it: only the paths that do
            table = table[(table[:, :first_decision] <= 0).all(dim=1)]
        paths = len(table)
        with self._autocast():
            actions = table.repeat_interleave(n, dim=0)
            every = Routing("imitate", actions=actions, first_decision=first_decision, samples=paths)
            outputs, trace = self.model(inputs, every)  # P blocks of the n inputs
            task_loss, rewards = self._score(outputs, targets.repeat(paths), trace, inputs, self._reference(inputs))
        loss, stats, weights = self.agent.exact_loss(trace, rewards, paths)
        self._check_local("policy loss", loss)
        self.agent.adapt_lam((weights * trace.compute_fraction.view(paths, -1)).sum(dim=0))
        self.agent.adapt_entropy_coef((weights * trace.entropy.view(paths, -1)).sum(dim=0))
        drawn = torch.multinomial(weights.T.float(), 1).squeeze(1)  # (n,) a path per input, as sampling would
        rows = drawn * n + torch.arange(n, device=drawn.device)
        trace, task_loss = trace.rows(rows), task_loss.index_select(0, rows)
        stats.update(self._task_stats("policy", outputs.index_select(0, rows), targets, task_loss, trace))
        return loss, stats, task_loss, trace

    def _policy_loss(self, inputs: torch.Tensor, targets: torch.Tensor, first_decision: int, explore: float):
        """Sample paths, score them, build the REINFORCE loss: (loss, stats, task loss (K*B,), trace)."""
        if self.path_actions is not None:
            return self._exact_policy_loss(inputs, targets, first_decision)
        k = self.agent.samples_per_input
        repeated_targets = targets.repeat(k)
        teacher_copy = self.config.agent.teacher != "labels"  # the teacher rides along as one more copy
        with self._autocast():
            sample = Routing(
                "sample", first_decision=first_decision, explore=explore, samples=k, full_depth_copy=teacher_copy
            )
            outputs, trace = self.model(inputs, sample)  # K blocks of the batch (and the full-depth one)
            if teacher_copy:
                sampled = slice(0, k * len(inputs))
                reference = outputs[sampled.stop :].detach()
                outputs, trace = outputs[sampled], trace.rows(sampled)
            else:  # the labels teacher: no reference
                reference = None
            task_loss, rewards = self._score(outputs, repeated_targets, trace, inputs, reference)
            greedy_rewards = None
            if self.config.agent.baseline == "self_critical":
                with torch.no_grad():
                    greedy_outputs, greedy_trace = self.model(inputs, Routing("greedy", first_decision=first_decision))
                    _, greedy_rewards = self._score(greedy_outputs, targets, greedy_trace, inputs, reference)
        loss, stats = self.agent.loss(trace, rewards, greedy_rewards)
        self._check_local("policy loss", loss)
        self.agent.adapt_lam(trace.compute_fraction)
        self.agent.adapt_entropy_coef(trace.entropy)
        stats.update(self._task_stats("policy", outputs, repeated_targets, task_loss, trace))
        if self.config.agent.explore > 0:
            stats["policy/explore"] = explore
        return loss, stats, task_loss, trace

    # -- the updates -----------------------------------------------------------------------

    def supervised(
        self, inputs: torch.Tensor, targets: torch.Tensor, routing: Routing
    ) -> tuple[dict[str, float], JumpTrace]:
        """One network update on ``routing``'s paths; the policy is frozen (it may only pick them).
        With trainer.distill (and paths other than full depth) the step also runs full depth, which
        learns the labels, while the paths learn full depth's outputs; the stats stay the paths'."""
        self._train_mode()
        t = self.config.trainer
        distill = t.distill and routing.mode != "full"
        with frozen(self.policy_params), self._autocast():
            outputs, trace = self.model(inputs, routing)
            full_outputs = self.model(inputs, Routing("full"))[0] if distill else None
        loss = self.task.per_sample_loss(outputs.float(), targets)
        self._check_local("task loss", loss)
        if distill:  # full depth learns the labels, the path learns full depth's (detached) outputs
            objective = self.task.per_sample_loss(full_outputs.float(), targets).mean()
            objective = objective + self.task.divergence(outputs, full_outputs.detach()).mean()
        else:
            objective = loss.mean()
        self.network_optimizer.zero_grad(set_to_none=True)
        objective.backward()
        self._step(self.network_params, self.network_optimizer, t.grad_clip, "network")
        if t.threshold_update:  # every rank moves its thresholds by the loss of the whole batch
            self.model.stack.update_threshold(float(self.ranks.gather(loss).mean()), t.threshold_lr)
        return self._task_stats("train", outputs, targets, loss, trace), trace

    def policy(
        self, inputs: torch.Tensor, targets: torch.Tensor, first_decision: int = 0, explore: float = 0.0
    ) -> tuple[dict[str, float], JumpTrace]:
        """One REINFORCE update of the policy; the network is frozen and computes no gradients.

        explore: paths are sampled from (1 - explore) * pi + explore * uniform (see ``Routing``)."""
        self._train_mode()
        with frozen(self.network_params):
            loss, stats, _, trace = self._policy_loss(inputs, targets, first_decision, explore)
            self._step_policy(loss)
        return stats, trace

    def joint(
        self, inputs: torch.Tensor, targets: torch.Tensor, first_decision: int = 0, explore: float = 0.0
    ) -> tuple[dict[str, float], JumpTrace]:
        """Both updates from one forward pass, the network on all K sampled copies of the batch."""
        self._train_mode()
        policy_loss, stats, task_loss, trace = self._policy_loss(inputs, targets, first_decision, explore)
        self.network_optimizer.zero_grad(set_to_none=True)
        self.policy_optimizer.zero_grad(set_to_none=True)
        (task_loss.mean() + policy_loss).backward()  # disjoint: the policy reads detached states
        self._step(self.network_params, self.network_optimizer, self.config.trainer.grad_clip, "network")
        self._step(self.policy_params, self.policy_optimizer, self.config.agent.grad_clip, "policy")
        stats.update({f"train/{key}": stats[f"policy/{key}"] for key in TASK_METRICS})  # the network's paths too
        return stats, trace

    def imitate(self, inputs: torch.Tensor, actions: torch.Tensor) -> dict[str, float]:
        """One behaviour-cloning update of the policy towards the paths ``actions`` (B, L - 1)."""
        self._train_mode()
        with frozen(self.network_params), self._autocast():
            _, trace = self.model(inputs, Routing("imitate", actions=actions))
            loss = -trace.log_probs.mean()
            self._check_local("imitation loss", loss)
            self._step_policy(loss)
        return {
            "imitation/loss": float(loss.detach()),
            "imitation/compute_fraction": float(trace.compute_fraction.mean()),
        }

    # -- state -----------------------------------------------------------------------------

    def check_parameters(self) -> None:
        """Raise if any parameter is NaN or infinite (checked before a checkpoint is written)."""
        check_finite("parameters", torch.nn.utils.get_total_norm(self.network_params + self.policy_params))

    def state_dict(self) -> dict:
        return {
            "agent": self.agent.state_dict(),
            "network_optimizer": self.network_optimizer.state_dict(),
            "policy_optimizer": self.policy_optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict, path: str = "checkpoint") -> None:
        load_module_state(self.agent, state["agent"], path, "the agent (baseline)")
        self.network_optimizer.load_state_dict(state["network_optimizer"])
        self.policy_optimizer.load_state_dict(state["policy_optimizer"])
