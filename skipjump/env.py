"""The jump decision as a Gymnasium environment: an episode is one input travelling through a
trained, frozen network, one step per jump decision.

    observation  float32 (D + E + 2,): mean over tokens of the layer's output (what the built-in
                 state policy reads), the head's confidence (E = 2, with ``policy_confidence``
                 only, else E = 0), the layer that just ran / (L - 1), and the compute fraction
                 spent so far
    action       Discrete(max_jump + 1): skip that many layers; a jump past the last layer lands
                 on it (``info["action_mask"]`` marks the actions that land on distinct layers)
    reward       the trainer's :func:`~skipjump.reward.jump_reward` (with ``agent.teacher=full_depth``
                 its loss is the path's divergence from full depth, with ``full_depth_answer`` 1 where
                 the path changes full depth's answer), paid when the last layer has
                 run; ``shaped=True`` pays lam * (compute a jump saved) at each jump and the rest
                 at the end, so an episode's return is unchanged
    info         at the end: row, label, loss (the task loss against the label, whatever the reward's
                 teacher), correct, layers, compute_fraction, actions, executed

Each decision is charged the built-in policy's FLOPs (``decision_flops``; a run with the seed's
input policy is charged one call per input), as in the trainer's reward, so rewards compare with
the in-model policy's; pass 0 to charge nothing.
:class:`JumpVectorEnv` moves N episodes through the real batched stack: each step gathers the
rows at each layer with ``index_select``, so skipped rows are never computed.

    gymnasium.make("skipjump/Digits-v0", run_dir="runs/digits__0__...")       # a trained network
    gymnasium.make_vec("skipjump/Digits-v0", num_envs=64, vectorization_mode="vector_entry_point")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from skipjump.checkpoint import CheckpointError, random_states, set_random_states
from skipjump.config import Config, load
from skipjump.evaluate import sequence_length
from skipjump.registration import ENV_IDS
from skipjump.reward import jump_reward, reward_loss
from skipjump.runlog import checkpoint_path
from skipjump.runs import load_trained
from skipjump.stack import JumpTrace
from skipjump.tasks import JumpModel, Split, Task
from skipjump.trainer import build

CONFIGS = Path(__file__).parent / "configs"
SPLITS = ("policy", "test", "train")


@dataclass
class Source:
    """A frozen network and the rows an environment draws from."""

    config: Config
    task: Task
    model: JumpModel
    splits: dict[str, Split]  # policy: the held-out training rows the network never trained on; test; train
    lam: float  # the reward's weight of compute saved (a run's: the value it ended with)


def load_source(run_dir: str | Path | None = None, task: str | None = None, config: Config | None = None) -> Source:
    """The network of ``run_dir`` (its last checkpoint and final lam; ``task``, if given, must be
    the run's), or an untrained one from ``config`` (default: the shipped config of ``task``, by
    default digits). Global random states are left as they were."""
    saved = random_states()
    try:
        if run_dir is not None:
            trainer, state = load_trained(run_dir)
            config = trainer.config
            if task is not None and config.task.name != task:
                hint = ENV_IDS.get(config.task.name, "its own id")
                raise ValueError(f"{run_dir} trained task {config.task.name!r}, not {task!r}: use {hint}")
            try:
                lam = float(state["updates"]["agent"]["lam"])
            except (KeyError, TypeError, ValueError):
                path = checkpoint_path(run_dir)
                raise CheckpointError(f"{path}: no reward weight (updates.agent.lam) in the checkpoint") from None
        else:
            if config is None:
                task = task or "digits"
                if task not in ENV_IDS:
                    raise ValueError(f"unknown task {task!r}: one of {', '.join(ENV_IDS)}")
                config = load(CONFIGS / f"{task}.yaml")
            trainer = build(config)
            lam = config.agent.lam
    finally:
        set_random_states(saved)
    splits = {"policy": trainer.policy_split, "test": trainer.task.test, "train": trainer.task.train}
    return Source(config, trainer.task, trainer.model.eval().requires_grad_(False), splits, lam)


class Episodes:
    """The state of N episodes on one frozen model; slot s holds one input at a time.

    h (N, T, D) is the output of the layer each slot ran last (``layer``), before the jump mix its
    next action triggers; x (N, T, D) the stack input; work_mem (N, 1, D) the working memory.
    """

    def __init__(
        self,
        source: Source,
        split: str,
        slots: int,
        shaped: bool = False,
        decision_flops: float | None = None,
        lam: float | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.source, self.split, self.shaped = source, source.splits[split], shaped
        model = source.model
        self.stack = model.stack
        c = source.config.model
        self.num_layers, self.max_jump = c.num_layers, c.max_jump
        if self.num_layers < 3:
            raise ValueError(f"an environment needs a stack of at least 3 layers (a decision), got {self.num_layers}")
        self.tokens, dims = sequence_length(model, self.split), c.dims
        probe_flops = model.probe_flops(self.tokens) if c.policy_confidence else 0.0
        policy_flops = self.stack.policy.flops(self.tokens) + probe_flops
        self.decision_flops = policy_flops if decision_flops is None else decision_flops
        self.one_call = c.policy_inputs == "input"  # the seed's policy: one call per input, as the trainer charges
        self.full_flops = self.stack.full_depth_flops(self.tokens)
        self.obs_dims = dims + (2 if c.policy_confidence else 0) + 2
        with torch.no_grad():  # the network is frozen: these are constants
            self.mix = self.stack.mix_weights()
            flops = self.stack.layer_flops(self.tokens)
            self.flops_before = torch.cat([flops.new_zeros(1), flops.cumsum(0)])  # [i]: layers 0..i-1
        self.rows = torch.zeros(slots, dtype=torch.long)
        self.x = torch.zeros(slots, self.tokens, dims)
        self.h = torch.zeros_like(self.x)
        self.work_mem = torch.zeros(slots, 1, dims)
        self.layer = torch.zeros(slots, dtype=torch.long)
        self.executed = torch.zeros(slots, self.num_layers, dtype=torch.bool)
        self.actions = torch.full((slots, self.num_layers - 1), -1, dtype=torch.long)
        self.paid = torch.zeros(slots)  # shaped reward handed out so far
        self.lam = source.lam if lam is None else float(lam)  # compute saved's weight; an agent may adapt it

    @torch.no_grad()
    def start(self, slots: torch.Tensor, rows: torch.Tensor) -> None:
        """Begin episodes in ``slots`` (S,) on the split's ``rows`` (S,): embed, run layer 0 (and on
        while nothing is to decide)."""
        x = self.source.model.embed(self.split.inputs[rows])
        self.rows[slots], self.x[slots], self.h[slots] = rows, x, x
        self.work_mem[slots] = self.stack.work_memory
        self.executed[slots], self.actions[slots], self.paid[slots] = False, -1, 0.0
        self._run(slots, torch.zeros_like(slots))

    @torch.no_grad()
    def step(self, slots: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Apply ``actions`` (S,) at each slot's pending decision and run on to the next one; returns
        the shaped reward paid now (S,) (zeros unless ``shaped``)."""
        layer = self.layer[slots]
        a = torch.minimum(actions, (self.num_layers - 2 - layer).clamp(max=self.max_jump))  # distinct landings
        self.actions[slots, layer] = a
        if self.source.config.model.jump_mix:
            h = self.h[slots]
            mixed, self.work_mem[slots] = self.stack.after_jump(
                h, self.x[slots], self.work_mem[slots], h.mean(dim=1), a, self.mix
            )
            self.h[slots] = mixed
        self._run(slots, layer + 1 + a)
        if not self.shaped:
            return torch.zeros(len(slots))
        saved = (self.flops_before[layer + 1 + a] - self.flops_before[layer + 1]) / self.full_flops
        pay = self.lam * saved
        self.paid[slots] += pay
        return pay

    def _run(self, slots: torch.Tensor, next_layer: torch.Tensor) -> None:
        """Run each slot's ``next_layer`` (S,), layer by layer over the rows at it; after L - 2 the last runs too."""
        last = self.num_layers - 1
        for i, layer in enumerate(self.stack.layers):
            rows = slots[next_layer == i]
            if rows.numel() == 0:
                continue
            self.h[rows] = layer(self.h.index_select(0, rows))
            self.executed[rows, i] = True
            self.layer[rows] = i
            if i == last - 1:  # every action lands on the last layer: nothing to decide
                next_layer = torch.where(next_layer == i, last, next_layer)

    def finished(self, slots: torch.Tensor) -> torch.Tensor:
        return self.layer[slots] == self.num_layers - 1

    def spent(self, slots: torch.Tensor) -> torch.Tensor:
        """(S,) FLOPs spent so far over full depth: layers run and decisions made (the final MLP once finished)."""
        executed = self.executed[slots].float()
        calls = torch.ones(len(slots)) if self.one_call else (self.actions[slots] >= 0).sum(dim=1).float()
        decisions = calls * self.decision_flops
        final = self.finished(slots).float() * self.stack.final_flops(self.tokens)
        return (executed @ self.stack.layer_flops(self.tokens) + decisions + final) / self.full_flops

    @torch.no_grad()
    def observe(self, slots: torch.Tensor) -> np.ndarray:
        """(S, obs_dims) float32 observations of ``slots``."""
        h = self.h[slots]
        parts = [h.mean(dim=1)]
        if self.source.config.model.policy_confidence:
            parts.append(self.source.model.probe(h))
        parts += [(self.layer[slots].float() / (self.num_layers - 1))[:, None], self.spent(slots)[:, None]]
        return torch.cat(parts, dim=1).numpy().astype(np.float32)

    def action_mask(self, slots: torch.Tensor) -> np.ndarray:
        """(S, max_jump + 1) bool: the actions that land on distinct layers (all, once finished)."""
        choices = (self.num_layers - 2 - self.layer[slots]).clamp(min=0, max=self.max_jump) + 1
        choices = torch.where(self.finished(slots), self.max_jump + 1, choices)
        return (torch.arange(self.max_jump + 1)[None, :] < choices[:, None]).numpy()

    @torch.no_grad()
    def outputs(self, slots: torch.Tensor) -> torch.Tensor:
        """The task head's outputs for finished ``slots``: what the model's forward returns on those paths."""
        return self.source.model.head(self.stack.output(self.h[slots]))

    @torch.no_grad()
    def finish(self, slots: torch.Tensor) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """Rewards (S,) (less what shaping already paid) and the info of finished ``slots``."""
        task, a = self.source.task, self.source.config.agent
        outputs = self.outputs(slots)
        targets = self.split.targets[self.rows[slots]]
        loss = task.per_sample_loss(outputs, targets)
        correct = task.correct(outputs, targets)
        executed, actions = self.executed[slots], self.actions[slots]
        compute = self.spent(slots)
        trace = JumpTrace(
            actions=actions,
            executed=executed,
            log_probs=torch.zeros(len(slots)),
            entropy=torch.zeros(len(slots)),
            layers_executed=executed.sum(dim=1),
            compute_fraction=compute,
            features=self.x[slots].mean(dim=1),
        )
        inputs = self.split.inputs[self.rows[slots]]
        penalty = reward_loss(task, self.source.model, a.teacher, inputs, outputs, loss)
        rewards = jump_reward(trace, penalty, correct, kind=a.reward, lam=self.lam, gamma=a.gamma, loss_cap=a.loss_cap)
        info = {
            "row": self.rows[slots].numpy(),
            "label": targets.numpy(),
            "loss": loss.numpy().astype(np.float32),
            "correct": correct.numpy(),
            "layers": executed.sum(dim=1).numpy(),
            "compute_fraction": compute.numpy().astype(np.float32),
            "actions": actions.numpy(),
            "executed": executed.numpy(),
        }
        return rewards - self.paid[slots], info


def _episodes(slots: int, run_dir, task, config, split, lam, shaped, decision_flops, source) -> Episodes:
    """What JumpEnv and JumpVectorEnv are built on: the source (loaded unless given) and ``slots`` episodes."""
    return Episodes(source or load_source(run_dir, task, config), split, slots, shaped, decision_flops, lam)


def _check_action(action: Any, space: spaces.Discrete) -> int:
    if not space.contains(action):
        raise ValueError(f"action must be an integer in [0, {space.n - 1}], got {action!r}")
    return int(action)


class JumpEnv(gymnasium.Env):
    """One input per episode, drawn with ``self.np_random`` from ``split`` ("policy": the held-out
    training rows the network never trained on; "test"; "train"). See the module docstring for the spaces.

    run_dir: a run directory (its network and final lam; ``task``, if given, must be its task);
    else an untrained network from ``config`` or the shipped config of ``task`` (default digits).
    lam: overrides the reward weight. source: an already loaded network (shared between envs).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        run_dir: str | Path | None = None,
        *,
        task: str | None = None,
        config: Config | None = None,
        split: str = "policy",
        lam: float | None = None,
        shaped: bool = False,
        decision_flops: float | None = None,
        source: Source | None = None,
    ) -> None:
        self.episodes = _episodes(1, run_dir, task, config, split, lam, shaped, decision_flops, source)
        self.observation_space = spaces.Box(-np.inf, np.inf, (self.episodes.obs_dims,), np.float32)
        self.action_space = spaces.Discrete(self.episodes.max_jump + 1)
        self._slot = torch.zeros(1, dtype=torch.long)
        self._done = True

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """options={"row": i} starts on row i of the split instead of a random one."""
        super().reset(seed=seed)
        size = len(self.episodes.split)
        row = (options or {}).get("row")
        if row is None:
            row = int(self.np_random.integers(size))
        elif not 0 <= int(row) < size:
            raise ValueError(f"row must be in [0, {size - 1}], got {row}")
        self.episodes.start(self._slot, torch.tensor([int(row)]))
        self._done = False
        return self._observe(), {"row": int(row), "action_mask": self.episodes.action_mask(self._slot)[0]}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._done:
            raise RuntimeError("the episode has ended: call reset() first")
        a = _check_action(action, self.action_space)
        reward = float(self.episodes.step(self._slot, torch.tensor([a]))[0])
        info: dict[str, Any] = {}
        self._done = bool(self.episodes.finished(self._slot)[0])
        if self._done:
            final, details = self.episodes.finish(self._slot)
            reward += float(final[0])
            info = {key: value[0] for key, value in details.items()}
        info["action_mask"] = self.episodes.action_mask(self._slot)[0]
        return self._observe(), reward, self._done, False, info

    def _observe(self) -> np.ndarray:
        return self.episodes.observe(self._slot)[0]


class JumpVectorEnv(VectorEnv):
    """``num_envs`` episodes moved through the batched stack together; a finished episode restarts
    in the same step on a new row (``AutoresetMode.SAME_STEP``: its last observation and info are in
    ``info["final_obs"]`` and ``info["final_info"]``). Arguments as :class:`JumpEnv`."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 64,
        run_dir: str | Path | None = None,
        *,
        task: str | None = None,
        config: Config | None = None,
        split: str = "policy",
        lam: float | None = None,
        shaped: bool = False,
        decision_flops: float | None = None,
        source: Source | None = None,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        self.num_envs = num_envs
        self.episodes = _episodes(num_envs, run_dir, task, config, split, lam, shaped, decision_flops, source)
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (self.episodes.obs_dims,), np.float32)
        self.single_action_space = spaces.Discrete(self.episodes.max_jump + 1)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._all = torch.arange(num_envs)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """options={"rows": (num_envs,) ints} starts each env on the given row of the split."""
        super().reset(seed=seed)
        size = len(self.episodes.split)
        rows = (options or {}).get("rows")
        if rows is None:
            rows = self.np_random.integers(size, size=self.num_envs)
        rows = np.asarray(rows)
        integers = np.issubdtype(rows.dtype, np.integer)
        if rows.shape != (self.num_envs,) or not integers or not 0 <= rows.min() <= rows.max() < size:
            raise ValueError(f"rows must be {self.num_envs} integers in [0, {size - 1}]")
        self.episodes.start(self._all, torch.as_tensor(rows, dtype=torch.long))
        return self.episodes.observe(self._all), {"action_mask": self.episodes.action_mask(self._all)}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        actions = np.asarray(actions)
        integers = np.issubdtype(actions.dtype, np.integer)
        if (
            actions.shape != (self.num_envs,)
            or not integers
            or not self.action_space.contains(actions.astype(np.int64))
        ):
            n = self.single_action_space.n
            raise ValueError(f"actions must be {self.num_envs} integers in [0, {n - 1}], got {actions!r}")
        rewards = self.episodes.step(self._all, torch.as_tensor(actions, dtype=torch.long))
        done = self.episodes.finished(self._all)
        ended = self._all[done]
        infos: dict[str, Any] = {}
        if ended.numel():
            final, details = self.episodes.finish(ended)
            rewards[ended] += final
            mask = done.numpy()
            final_obs = np.full(self.num_envs, None, dtype=object)
            for slot, obs in zip(ended.tolist(), self.episodes.observe(ended)):
                final_obs[slot] = obs
            final_info: dict[str, Any] = {}
            for key, value in details.items():
                array = np.zeros((self.num_envs, *value.shape[1:]), dtype=value.dtype)
                array[mask] = value
                final_info[key], final_info[f"_{key}"] = array, mask
            infos = {"final_obs": final_obs, "_final_obs": mask, "final_info": final_info, "_final_info": mask}
            self.episodes.start(
                ended, torch.as_tensor(self.np_random.integers(len(self.episodes.split), size=len(ended)))
            )
        infos["action_mask"] = self.episodes.action_mask(self._all)
        obs = self.episodes.observe(self._all)
        return obs, rewards.numpy().astype(np.float32), done.numpy(), np.zeros(self.num_envs, dtype=bool), infos
