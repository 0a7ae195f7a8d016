"""The alternating trainer: supervised updates of the network, policy-gradient updates of the policy.

Schedule (``trainer.schedule``):
    alternate  ``warmup_steps`` supervised steps, then cycles of ``supervised_steps`` supervised
               and ``policy_steps`` policy steps
    joint      after the warm-up, each step updates both from one forward pass

A supervised step trains the network (never the policy) on the path given by
``supervised_path``: the policy's sampled path, full depth, or random skipping. A policy step
freezes the network (no network gradients are computed) and applies REINFORCE to the policy.
With ``policy_holdout`` > 0 the two read disjoint rows of the training split.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections import defaultdict
from collections.abc import Iterator

import torch
from tqdm import tqdm

from skipjump.agent import ReinforceAgent
from skipjump.checkpoint import CheckpointError, load_module_state, random_states, save_checkpoint, set_random_states
from skipjump.config import Config
from skipjump.evaluate import Evaluation, run_policy
from skipjump.reward import jump_reward
from skipjump.runlog import RunLog
from skipjump.stack import JumpTrace, Routing
from skipjump.tasks.base import JumpModel, Split, Task


class NonFiniteError(RuntimeError):
    """A NaN or infinite loss, reward or gradient; the message names the step and quantity."""


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


class Trainer:
    def __init__(self, config: Config, task: Task, model: JumpModel, run: RunLog | None = None) -> None:
        self.config, self.task, self.model, self.run = config, task, model, run
        t, a = config.trainer, config.agent
        self.agent = ReinforceAgent(a, config.model.dims)
        self.network_params = model.network_parameters()
        self.policy_params = list(model.stack.policy.parameters()) + list(self.agent.parameters())
        self.network_optimizer = torch.optim.AdamW(self.network_params, lr=t.lr, weight_decay=t.weight_decay)
        self.policy_optimizer = torch.optim.Adam(self.policy_params, lr=a.lr)
        # Policy steps read rows the network never trains on when policy_holdout > 0: on rows the
        # network has memorised every path's loss is ~0 and the reward sees only compute.
        order = torch.randperm(len(task.train), generator=torch.Generator().manual_seed(config.seed))
        held = min(round(t.policy_holdout * len(order)), len(order) - 1)
        self.policy_rows = order[:held] if held > 0 else order
        self.network_rows = order[held:]
        self.sampler = BatchSampler(len(self.network_rows), t.batch_size, config.seed)
        self.policy_sampler = BatchSampler(len(self.policy_rows), t.batch_size, config.seed + 1)
        self.step = 0
        self.policy_updates = 0
        self.stop_signal: int | None = None  # set by stop_on_signals; train() then returns early
        # The logging window is part of the state, so a resumed run logs what an unbroken one would.
        self._window: dict[str, list[float]] = defaultdict(list)
        self._window_paths: list[tuple[torch.Tensor, torch.Tensor]] = []  # (actions, executed)

    @property
    def policy_split(self) -> Split:
        """The training rows policy steps read (the held-out ones when ``policy_holdout`` > 0)."""
        return Split(self.task.train.inputs[self.policy_rows], self.task.train.targets[self.policy_rows])

    # -- schedule --------------------------------------------------------------------------

    def phase(self, step: int) -> str:
        t = self.config.trainer
        if step < t.warmup_steps:
            return "supervised"
        if t.schedule == "joint":
            return "joint"
        cycle = (step - t.warmup_steps) % (t.supervised_steps + t.policy_steps)
        return "supervised" if cycle < t.supervised_steps else "policy"

    def first_decision(self) -> int:
        """Curriculum: decisions unlock from the last layer backwards, one per ``curriculum_steps``."""
        steps = self.config.trainer.curriculum_steps
        last_decision = self.model.stack.num_layers - 2
        return 0 if steps == 0 else max(0, last_decision - self.policy_updates // steps)

    def supervised_routing(self) -> Routing:
        t = self.config.trainer
        if t.supervised_path == "full":
            return Routing("full")
        if t.supervised_path == "random":
            return Routing("random", p=t.random_p)
        return Routing("sample", first_decision=self.first_decision())

    # -- steps -----------------------------------------------------------------------------

    def _check(self, name: str, value: torch.Tensor) -> None:
        if not bool(torch.isfinite(value).all()):
            raise NonFiniteError(f"step {self.step}: non-finite {name} ({value.flatten()[:4].tolist()})")

    def _clip_and_step(self, params: list, optimizer: torch.optim.Optimizer, clip: float, name: str) -> None:
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
        self._check(f"{name} gradient norm", norm)
        optimizer.step()
        self._check(f"{name} parameters", torch.nn.utils.get_total_norm(params))  # before any save

    def _update(self, loss: torch.Tensor, params: list, optimizer: torch.optim.Optimizer, clip: float, name: str):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._clip_and_step(params, optimizer, clip, name)

    def _task_stats(self, prefix: str, outputs, targets, loss, trace: JumpTrace) -> dict[str, float]:
        """train/ for the paths the network trained on, policy/ for the paths the policy sampled."""
        return {
            f"{prefix}/loss": float(loss.detach().mean()),
            f"{prefix}/accuracy": float(self.task.correct(outputs, targets).float().mean()),
            f"{prefix}/compute_fraction": float(trace.compute_fraction.mean()),
            f"{prefix}/layers_mean": float(trace.layers_executed.float().mean()),
            f"{prefix}/unique_paths": trace.unique_paths(),
        }

    def supervised_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """One network update; the policy is frozen (it only picks the path)."""
        self.model.train()
        with frozen(self.policy_params):
            outputs = self.model(inputs, self.supervised_routing())
        loss = self.task.per_sample_loss(outputs, targets)
        self._check("task loss", loss)
        t = self.config.trainer
        self._update(loss.mean(), self.network_params, self.network_optimizer, t.grad_clip, "network")
        if t.threshold_update:
            self.model.stack.update_threshold(float(loss.mean()), t.threshold_lr)
        return self._task_stats("train", outputs, targets, loss, self.model.stack.trace)

    def _score(self, outputs: torch.Tensor, targets: torch.Tensor, trace: JumpTrace):
        """Per-sample task loss (B,) and reward (B,) of one forward pass."""
        a = self.config.agent
        loss = self.task.per_sample_loss(outputs, targets)
        self._check("task loss", loss)
        correct = self.task.correct(outputs, targets)
        rewards = jump_reward(trace, loss.detach(), correct, kind=a.reward, lam=float(self.agent.lam), gamma=a.gamma)
        self._check("reward", rewards)
        return loss, rewards

    def policy_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """Sample paths (K per input for leave-one-out), score them, build the REINFORCE loss.

        Returns the policy loss, statistics, and the per-sample task loss of the sampled paths.
        """
        k = self.agent.samples_per_input
        repeated = inputs.repeat(k, *([1] * (inputs.dim() - 1)))
        repeated_targets = targets.repeat(k)
        first = self.first_decision()
        outputs = self.model(repeated, Routing("sample", first_decision=first))
        trace = self.model.stack.trace
        task_loss, rewards = self._score(outputs, repeated_targets, trace)
        greedy_rewards = None
        if self.config.agent.baseline == "self_critical":
            with torch.no_grad():
                greedy_outputs = self.model(inputs, Routing("greedy", first_decision=first))
                _, greedy_rewards = self._score(greedy_outputs, targets, self.model.stack.trace)
            self.model.stack.trace = trace
        loss, stats = self.agent.loss(trace, rewards, greedy_rewards)
        self._check("policy loss", loss)
        self.agent.adapt_lam(trace.compute_fraction)
        stats.update(self._task_stats("policy", outputs, repeated_targets, task_loss, trace))
        return loss, stats, task_loss

    def policy_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """One REINFORCE update of the policy; the network is frozen and computes no gradients."""
        self.model.train()
        with frozen(self.network_params):
            loss, stats, _ = self.policy_loss(inputs, targets)
            self._update(loss, self.policy_params, self.policy_optimizer, self.config.agent.grad_clip, "policy")
        self.policy_updates += 1
        return stats

    def joint_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Both updates from one forward pass (for comparison with the alternating schedule).

        The network trains on the policy's sampled paths (``supervised_path`` does not apply),
        on all K copies of the batch when the baseline is leave-one-out.
        """
        self.model.train()
        policy_loss, stats, task_loss = self.policy_loss(inputs, targets)
        self.network_optimizer.zero_grad(set_to_none=True)
        self.policy_optimizer.zero_grad(set_to_none=True)
        (task_loss.mean() + policy_loss).backward()  # disjoint: the policy reads detached states
        self._clip_and_step(self.network_params, self.network_optimizer, self.config.trainer.grad_clip, "network")
        self._clip_and_step(self.policy_params, self.policy_optimizer, self.config.agent.grad_clip, "policy")
        self.policy_updates += 1
        task_keys = ("loss", "accuracy", "compute_fraction", "layers_mean", "unique_paths")
        stats.update({f"train/{key}": stats[f"policy/{key}"] for key in task_keys})  # the network's paths too
        return stats

    # -- loop ------------------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        phase = self.phase(self.step)
        if phase == "policy":
            index = self.policy_rows[self.policy_sampler.next()]
        else:
            index = self.network_rows[self.sampler.next()]
        inputs, targets = self.task.train.inputs[index], self.task.train.targets[index]
        stats = {"supervised": self.supervised_step, "policy": self.policy_step, "joint": self.joint_step}[phase](
            inputs, targets
        )
        self.step += 1
        return stats

    def train(self, steps: int | None = None) -> None:
        """Run until ``steps`` (default: ``trainer.steps``) with a progress bar, logs and checkpoints."""
        t = self.config.trainer
        end = t.steps if steps is None else steps
        bar = tqdm(total=end, initial=self.step, desc="train", disable=None, dynamic_ncols=True)
        started, started_step = time.perf_counter(), self.step
        if self.run is not None and not self.run.checkpoint_path.exists():
            self.save()  # from the first moment on, the run directory holds a loadable checkpoint
        while self.step < end and self.stop_signal is None:
            policy_chose = self.phase(self.step) != "supervised" or self.supervised_routing().uses_policy
            stats = self.train_step()
            for key, value in stats.items():
                self._window[key].append(value)
            if policy_chose:  # histograms show the policy's paths, not full-depth or random ones
                trace = self.model.stack.trace
                self._window_paths.append((trace.actions, trace.executed))
            bar.update(1)
            if "policy/reward" in stats:
                bar.set_postfix(
                    reward=f"{stats['policy/reward']:+.3f}", compute=f"{stats['policy/compute_fraction']:.2f}"
                )
            if self.step % t.log_every == 0 or self.step == t.steps:
                rate = (self.step - started_step) / (time.perf_counter() - started)
                self.log_window(rate)
            if t.eval_every and self.step % t.eval_every == 0 and self.step < t.steps:  # the last: full eval
                self.log_evaluation({name: self.evaluate_one(name) for name in ("greedy", "full")})
            if self.run is not None and (self.step % t.checkpoint_every == 0 or self.step == end):
                self.save()
        bar.close()

    def log_window(self, steps_per_second: float) -> None:
        if self.run is None or not self._window:
            self._window.clear()
            self._window_paths.clear()
            return
        values = {key: sum(v) / len(v) for key, v in self._window.items()}
        values["charts/steps_per_second"] = steps_per_second
        for i, threshold in enumerate(self.model.stack.thresholds()):
            values[f"gates/threshold_layer{i}"] = threshold
        self.run.scalars(self.step, values)
        if self._window_paths:
            actions = torch.cat([a for a, _ in self._window_paths])
            executed = torch.cat([e for _, e in self._window_paths])
            self.run.jump_histograms(self.step, actions, executed)
        self._window.clear()
        self._window_paths.clear()

    # -- evaluation ------------------------------------------------------------------------

    def evaluate_one(self, name: str) -> Evaluation:
        routing = Routing("greedy", first_decision=self.first_decision()) if name == "greedy" else Routing("full")
        return run_policy(self.model, self.task, self.task.test, routing, self.config.trainer.eval_batch_size)

    def log_evaluation(self, results: dict[str, Evaluation]) -> None:
        if self.run is None:
            return
        values = {}
        for name, result in results.items():
            for key in ("accuracy", "loss", "layers_mean", "compute_fraction", "unique_paths"):
                values[f"eval/{name}/{key}"] = float(result.summary[key])
        self.run.scalars(self.step, values)
        if "greedy" in results:
            samples = results["greedy"].samples
            self.run.jump_histograms(
                self.step, torch.from_numpy(samples["actions"]), torch.from_numpy(samples["executed"]), "eval_jumps"
            )

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "agent": self.agent.state_dict(),
            "network_optimizer": self.network_optimizer.state_dict(),
            "policy_optimizer": self.policy_optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "policy_sampler": self.policy_sampler.state_dict(),
            "step": self.step,
            "policy_updates": self.policy_updates,
            "random": random_states(),
            "window": (dict(self._window), list(self._window_paths)),
        }

    def load_state_dict(self, state: dict, path: str = "checkpoint") -> None:
        """Restore everything ``state_dict`` saved; mismatches raise CheckpointError naming ``path``."""
        missing = [key for key in self.state_dict() if key not in state]
        if missing:
            raise CheckpointError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
        load_module_state(self.model, state["model"], path, "the model")
        load_module_state(self.agent, state["agent"], path, "the agent (baseline)")
        self.network_optimizer.load_state_dict(state["network_optimizer"])
        self.policy_optimizer.load_state_dict(state["policy_optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.policy_sampler.load_state_dict(state["policy_sampler"])
        self.step, self.policy_updates = state["step"], state["policy_updates"]
        window, paths = state["window"]
        self._window = defaultdict(list, window)
        self._window_paths = list(paths)
        set_random_states(state["random"])

    def save(self) -> None:
        self.run.flush()  # events first: resuming purges those after the checkpoint, never before
        save_checkpoint(self.run.checkpoint_path, self.state_dict())


@contextlib.contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """SIGINT and SIGTERM ask ``trainer`` to stop after the current step (a second SIGINT aborts)."""

    def request_stop(signum, frame):
        trainer.stop_signal = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
