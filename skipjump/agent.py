"""REINFORCE for jump paths: baselines, advantages and the policy loss.

    loss = -mean_b(A_b * log pi(path_b | x_b)) - entropy_coef * mean_b(H_b) [+ 0.5 mean_b((V_b - r_b)^2)]

log pi(path | x) is the trace's ``log_probs``: the sum over the decisions the sample made.
Baselines b give A = r - b:
    none            b = 0
    moving_average  b = running mean of batch-mean rewards (the value before this batch's update)
    self_critical   b = reward of the greedy path on the same input (computed by the caller)
    leave_one_out   K paths per input, b_k = mean of the other K - 1 rewards (RLOO; unbiased)
    value           b = V(x), a small head on the pooled stack input, trained by 0.5 (V - r)^2

With ``credit: decision`` and leave_one_out each decision t gets its own advantage,
    loss = -mean_b sum_t A_bt * log pi(a_bt | s_bt),   A_bt = r_b - b_bt,
where b_bt is the mean reward of the input's other paths that made the same decisions before t
(so reached the same state: the network is deterministic), or of all its other paths where none
did. Such a baseline does not depend on a_bt, so the gradient stays unbiased; a decision that
paths share until they part is judged against the paths that parted later, not before. The
other baselines have one value per path, so every decision gets its path's advantage (the same
loss as ``credit: path``).

With ``estimator: exact`` no path is sampled: every path p of each input runs (the paths'
probabilities pi_p sum to 1) and the loss is
    loss = -mean_x sum_p sg(pi_p) (r_p - rbar) log pi_p / s - entropy_coef * mean_x sum_p sg(pi_p) H_p,
    rbar = sum_p pi_p r_p,   s = sqrt(mean_x sum_p pi_p (r_p - rbar)^2)   (normalize_advantage),
whose gradient is that of -E_pi[r] / s over the batch's inputs: the expectation REINFORCE
estimates, so inputs whose sampled paths would all agree (zero advantage) still teach the policy.

With ``target_compute`` set, the reward's lam is a Lagrange multiplier for the constraint
E[compute fraction] <= target, moved by dual ascent after each policy step:
    lam <- max(0, lam + lam_lr * (mean compute fraction - target))
With ``target_entropy`` set, entropy_coef is moved the same way to hold the mean entropy near
the target (as SAC tunes its temperature), so the policy keeps exploring:
    entropy_coef <- max(0, entropy_coef + entropy_lr * (target - mean entropy))
The entropy is the trace's: per sample, the mean over its decisions of the entropy of the
distribution it sampled from (the mixture, with ``agent.explore``).

Batch statistics (the running mean, advantage normalisation, the compute and entropy means that
move lam and entropy_coef) are taken over ``gather(x)``: every rank's samples under torchrun,
so all ranks hold the same lam and entropy_coef.
"""

from __future__ import annotations

import typing
from collections.abc import Callable

import torch
from torch import nn

from skipjump.config import AgentConfig, Baseline
from skipjump.stack import JumpTrace

BASELINES = typing.get_args(Baseline)


def decision_advantages(rewards: torch.Tensor, actions: torch.Tensor, samples: int) -> torch.Tensor:
    """Leave-one-out advantages per decision: rewards (K * B,) and actions (K * B, L - 1) of K blocks
    of one batch each (as from ``x.repeat(K, ...)``) -> (K * B, L - 1); see the module docstring."""
    r = rewards.view(samples, 1, -1, 1)  # (K, 1, B, 1): path k of input b
    a = actions.view(samples, -1, actions.shape[-1])  # (K, B, L - 1)
    differ = (a.unsqueeze(1) != a.unsqueeze(0)).long()  # (K, K, B, L - 1): paths j, k part at decision t
    before = differ.cumsum(dim=-1) - differ  # decisions before t where they differ
    others = ~torch.eye(samples, dtype=torch.bool, device=rewards.device).view(samples, samples, 1, 1)
    same = (before == 0) & others  # (K, K, B, L - 1): j != k reached decision t as k did
    count = same.sum(dim=0)  # (K, B, L - 1), indexed by k
    shared = (same * r).sum(dim=0) / count.clamp(min=1)  # r broadcast over k: row j is path j's reward
    everyone = (r.sum(dim=0) - r.squeeze(1)) / (samples - 1)  # (K, B, 1): the path-level baseline
    baseline = torch.where(count > 0, shared, everyone)
    return (r.squeeze(1) - baseline).flatten(0, 1)


class ReinforceAgent(nn.Module):
    """Holds the baseline's state (running mean, value head) so checkpoints keep it."""

    def __init__(
        self, config: AgentConfig, dims: int, gather: Callable[[torch.Tensor], torch.Tensor] = torch.Tensor.detach
    ) -> None:
        super().__init__()
        self.gather = gather  # (n,) here -> (N,) over all ranks
        if config.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {config.baseline!r}")
        self.config = config
        self.value = (
            nn.Sequential(nn.Linear(dims, 64), nn.SiLU(), nn.Linear(64, 1)) if config.baseline == "value" else None
        )
        self.register_buffer("running_reward", torch.tensor(float("nan")))
        self.register_buffer("lam", torch.tensor(float(config.lam)))  # the reward's weight of compute saved
        adaptive = config.target_entropy is not None  # a fixed coefficient is config, not state
        self.register_buffer("entropy_coef", torch.tensor(float(config.entropy_coef)), persistent=adaptive)

    def adapt_lam(self, compute_fraction: torch.Tensor) -> None:
        """Dual ascent towards ``target_compute`` (no-op when it is None); compute_fraction (B,)."""
        target = self.config.target_compute
        if target is not None:
            error = float(self.gather(compute_fraction).mean()) - target
            self.lam.copy_((self.lam + self.config.lam_lr * error).clamp(min=0.0))

    def adapt_entropy_coef(self, entropy: torch.Tensor) -> None:
        """Dual ascent towards ``target_entropy`` (no-op when it is None); entropy (B,) per sample."""
        target = self.config.target_entropy
        if target is not None:
            error = target - float(self.gather(entropy).mean())
            self.entropy_coef.copy_((self.entropy_coef + self.config.entropy_lr * error).clamp(min=0.0))

    @property
    def samples_per_input(self) -> int:
        return self.config.samples if self.config.baseline == "leave_one_out" else 1

    def advantages(
        self, rewards: torch.Tensor, greedy_rewards: torch.Tensor | None = None, features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """rewards (B,) -> advantages (B,) before normalisation, and the value head's loss (or None).

        leave_one_out: rewards are K blocks of one batch each, (K * B,), as from ``x.repeat(K, ...)``.
        """
        kind = self.config.baseline
        value_loss = None
        if kind == "none":
            advantages = rewards
        elif kind == "moving_average":
            previous = self.running_reward
            batch_mean = self.gather(rewards).mean()
            first = bool(torch.isnan(previous))
            advantages = rewards - (batch_mean if first else previous)
            m = self.config.momentum
            self.running_reward.copy_(batch_mean if first else m * previous + (1 - m) * batch_mean)
        elif kind == "self_critical":
            if greedy_rewards is None:
                raise ValueError("the self_critical baseline needs the greedy path's rewards")
            advantages = rewards - greedy_rewards
        elif kind == "leave_one_out":
            k = self.config.samples
            grouped = rewards.view(k, -1)
            others = (grouped.sum(dim=0, keepdim=True) - grouped) / (k - 1)
            advantages = (grouped - others).flatten()
        else:
            if features is None:
                raise ValueError("the value baseline needs the trace's features")
            values = self.value(features).squeeze(-1)
            advantages = rewards - values.detach()
            value_loss = 0.5 * (values - rewards).square().mean()
        return advantages.detach(), value_loss

    def exact_loss(
        self, trace: JumpTrace, rewards: torch.Tensor, paths: int
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """The exact policy-gradient loss over every path of each input (see the module docstring).

        trace and rewards: P blocks of one batch of n inputs, (P * n,) rows, block p running path p.
        Returns the loss, statistics to log, and each path's probability (P, n), detached.
        """
        log_probs = trace.log_probs.view(paths, -1)  # (P, n)
        weights = log_probs.detach().exp()
        r = rewards.view(paths, -1)
        expected = (weights * r).sum(dim=0)  # (n,) E_pi[r] per input
        advantages = r - expected
        spread = float(self.gather((weights * advantages.square()).sum(dim=0)).mean().sqrt())
        scale = spread + 1e-8 if self.config.normalize_advantage else 1.0
        policy_loss = -(weights * advantages * log_probs).sum(dim=0).mean() / scale
        entropy = (weights * trace.entropy.view(paths, -1)).sum(dim=0)  # (n,) expected entropy per input
        loss = policy_loss - float(self.entropy_coef) * entropy.mean()
        return loss, self._stats(policy_loss, entropy.mean(), expected, spread), weights

    def _stats(
        self, policy_loss: torch.Tensor, entropy: torch.Tensor, rewards: torch.Tensor, spread: float
    ) -> dict[str, float]:
        """What a policy step logs: its loss, the mean entropy and reward, the advantages' raw spread."""
        stats = {
            "policy/loss": float(policy_loss.detach()),
            "policy/entropy": float(entropy.detach()),
            "policy/reward": float(rewards.mean()),
            "policy/advantage_std": spread,
            "policy/lam": float(self.lam),
        }
        if self.config.target_entropy is not None:
            stats["policy/entropy_coef"] = float(self.entropy_coef)
        return stats

    def loss(
        self, trace: JumpTrace, rewards: torch.Tensor, greedy_rewards: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The policy-gradient loss from the trace's log-probs, and statistics to log."""
        advantages, value_loss = self.advantages(rewards, greedy_rewards, trace.features)
        everyone = self.gather(advantages)
        std = everyone.std() if everyone.numel() > 1 else None
        spread = 0.0 if std is None else float(std)
        if self.config.normalize_advantage and std is not None:
            advantages = (advantages - everyone.mean()) / (std + 1e-8)
        if self.config.credit == "decision" and self.config.baseline == "leave_one_out":
            if trace.decision_log_probs is None:
                raise ValueError("credit per decision needs the trace's decision_log_probs (a JumpStack fills them)")
            per_decision = decision_advantages(rewards, trace.actions, self.config.samples)
            if self.config.normalize_advantage and std is not None:  # leave-one-out advantages have mean 0
                per_decision = per_decision / (std + 1e-8)
            policy_loss = -(per_decision * trace.decision_log_probs).sum(dim=1).mean()
        else:
            policy_loss = -(advantages * trace.log_probs).mean()
        entropy = trace.entropy.mean()
        loss = policy_loss - float(self.entropy_coef) * entropy  # a value: adapting it must not touch the graph
        if value_loss is not None:
            loss = loss + value_loss
        stats = self._stats(policy_loss, entropy, rewards, spread)
        if value_loss is not None:
            stats["policy/value_loss"] = float(value_loss.detach())
        return loss, stats
