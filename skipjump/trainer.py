"""The alternating trainer: supervised updates of the network, policy-gradient updates of the policy.

The pieces, one idea each: :class:`~skipjump.schedule.Schedule` says which update a step makes
and on which rows, :class:`~skipjump.updates.Updates` makes it, and an optional
:class:`~skipjump.monitor.Monitor` logs, evaluates and saves checkpoints. The trainer holds the
counters and runs the loop; ``build`` makes one from a config. Under torchrun every rank runs
this loop on its shard of each batch (:mod:`skipjump.distributed`); only rank 0 has a monitor.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator

import torch
from tqdm import tqdm

from skipjump.checkpoint import (
    CheckpointError,
    check_counts,
    load_module_state,
    random_states,
    seed_everything,
    set_random_states,
)
from skipjump.config import Config, ConfigError
from skipjump.distributed import Ranks
from skipjump.evaluate import Evaluation, run_policy, subsample
from skipjump.monitor import Monitor
from skipjump.path_scores import oracle_actions
from skipjump.schedule import Schedule
from skipjump.stack import Routing, count_unique_rows
from skipjump.tasks import JumpModel, Split, Task, make_task
from skipjump.updates import NonFiniteError, Updates

STATE_KEYS = ("model", "updates", "schedule", "step", "policy_updates", "random", "window")


Paths = tuple[torch.Tensor, torch.Tensor]  # (actions (N, L - 1), executed (N, L)) of a step's sampled paths


class Trainer:
    def __init__(
        self, config: Config, task: Task, model: JumpModel, monitor: Monitor | None = None, ranks: Ranks | None = None
    ) -> None:
        self.ranks = ranks or Ranks()
        self.config, self.task, self.model, self.monitor = config, task, model.to(self.ranks.device), monitor
        self.updates = Updates(config, task, model, self.ranks)
        t = config.trainer
        self.global_batch = t.batch_size * self.ranks.world
        self.schedule = Schedule(t, len(task.train), model.stack.num_layers, config.seed, self.global_batch)
        if t.policy_augment > 0 and type(task).augment is Task.augment:
            raise ConfigError(f"trainer.policy_augment: task {task.name!r} defines no augmentation; set it to 0")
        smallest = min(len(self.schedule.network_rows), len(self.schedule.policy_rows))
        if self.ranks.world > 1 and not task.generated and self.global_batch > smallest:
            raise ConfigError(
                f"trainer.batch_size: {t.batch_size} rows x {self.ranks.world} ranks exceeds the {smallest} training"
                " rows a step draws from; lower it"
            )
        if t.compile:
            compile_layers(model, self.ranks.device)
        self.step = 0
        self.policy_updates = 0
        self.signal_received: int | None = None  # set by stop_on_signals' handler, on this rank only
        self.stop_signal: int | None = None  # the signal every rank agreed to stop on; train() then returns early

    @property
    def policy_split(self) -> Split:
        """Rows kept from supervised steps, on which the references are chosen: the held-out training
        rows (``policy_holdout`` > 0; policy steps read them, and the network's too with
        ``policy_rows=all``), or a generated task's fixed ``train`` split."""
        if self.task.generated:
            return self.task.train
        return self.task.train.rows(self.schedule.held_out_rows)

    def first_decision(self) -> int:
        return self.schedule.first_decision(self.policy_updates)

    def exploration(self) -> float:
        """The policy's exploration floor at this step: ``agent.explore`` until the warm-up ends, then
        decayed linearly to 0 at ``trainer.steps`` (so the policy evaluated is the one trained; a
        resume that raises ``trainer.steps`` stretches the decay)."""
        t = self.config.trainer
        left = (t.steps - self.step) / max(1, t.steps - t.warmup_steps)
        return self.config.agent.explore * min(1.0, max(0.0, left))

    def train_step(self) -> tuple[dict[str, float], Paths | None]:
        """One step of the schedule: this rank's statistics, and the paths of every rank when the policy picked them."""
        phase = self.schedule.phase(self.step)
        if self.task.generated:
            batch = self.task.draw(self.global_batch, self.step)
        else:
            batch = self.task.train.rows(self.schedule.next_rows(phase))
        shard = self.ranks.shard(len(batch))
        inputs, targets = batch.inputs[shard], batch.targets[shard]
        if phase == "policy" and self.config.trainer.policy_augment > 0:
            inputs = self.task.augment(inputs, self.config.trainer.policy_augment)
        inputs, targets = inputs.to(self.ranks.device), targets.to(self.ranks.device)
        routing = self.schedule.supervised_routing(self.policy_updates, self.step)
        try:
            warm_start = {}
            if phase != "supervised" and self.policy_updates == 0 and self.config.trainer.imitation_steps:
                warm_start = self.imitate_oracle()
            if phase == "supervised":
                stats, trace = self.updates.supervised(inputs, targets, routing)
                trace = trace if routing.uses_policy else None
            else:
                update = self.updates.policy if phase == "policy" else self.updates.joint
                stats, trace = update(inputs, targets, self.first_decision(), self.exploration())
                self.policy_updates += 1
        except NonFiniteError as error:
            raise NonFiniteError(f"step {self.step}: {error}") from None
        self.step += 1
        paths = None if trace is None else (self.ranks.gather(trace.actions), self.ranks.gather(trace.executed))
        return {**warm_start, **stats}, paths

    def imitate_oracle(self) -> dict[str, float]:
        """The warm start before the first policy step (``imitation_steps``): score every path on
        rows the network never trained on, then teach the policy each row's oracle path at the
        compute target by behaviour cloning (what Dr.LLM and PoLar train routers on)."""
        t = self.config.trainer
        pool = subsample(self.policy_split, t.imitation_rows, self.config.seed)
        budget = self.config.agent.target_compute
        actions = oracle_actions(self.model, self.task, pool, budget, self.config.seed, t.eval_batch_size)
        generator = torch.Generator().manual_seed(self.config.seed)
        stats: dict[str, float] = {}
        shard, device = self.ranks.shard(self.global_batch), self.ranks.device
        quiet = None if self.ranks.main else True
        for _ in tqdm(range(t.imitation_steps), desc="imitate oracle paths", leave=False, disable=quiet):
            index = torch.randint(len(pool), (self.global_batch,), generator=generator)[shard]
            stats = self.updates.imitate(pool.inputs[index].to(device), actions[index].to(device))
        return stats

    def train(self, steps: int | None = None) -> None:
        """Run until ``steps`` (default: ``trainer.steps``) with a progress bar; the monitor logs and saves."""
        end = self.config.trainer.steps if steps is None else steps
        if self.step < end:  # a resumed, finished run: its price was set for the finished policy (budget.py)
            self.model.stack.policy.greedy_price.zero_()
        quiet = None if self.ranks.main else True  # one progress bar per job
        bar = tqdm(total=end, initial=self.step, desc="train", disable=quiet, dynamic_ncols=True)
        started, started_step = time.perf_counter(), self.step
        if self.monitor is not None:
            self.monitor.start(self)
        while self.step < end and self.stop_signal is None:
            stats, paths = self.train_step()
            # The handler writes signal_received, never stop_signal: a signal landing while this line
            # runs must not be overwritten by its result.
            stats, self.stop_signal = self.ranks.agree(stats, self.signal_received)
            if paths is not None and self.ranks.world > 1:  # distinct paths of the global batch, not a mean
                stats.update({k: count_unique_rows(paths[1]) for k in stats if k.endswith("/unique_paths")})
            bar.update(1)
            if "policy/reward" in stats:
                bar.set_postfix(
                    reward=f"{stats['policy/reward']:+.3f}", compute=f"{stats['policy/compute_fraction']:.2f}"
                )
            if self.monitor is not None:
                rate = (self.step - started_step) / (time.perf_counter() - started)
                try:
                    self.monitor.after_step(self, stats, paths, rate, last=self.step == end)
                except NonFiniteError as error:
                    raise NonFiniteError(f"step {self.step}: {error}") from None
        bar.close()

    def evaluate_one(self, name: str) -> Evaluation:
        """``greedy`` (the curriculum's decisions only) or ``full`` depth on the test split."""
        routings = {"greedy": Routing("greedy", first_decision=self.first_decision()), "full": Routing("full")}
        return run_policy(self.model, self.task, self.task.test, routings[name], self.config.trainer.eval_batch_size)

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "updates": self.updates.state_dict(),
            "schedule": self.schedule.state_dict(),
            "step": self.step,
            "policy_updates": self.policy_updates,
            "random": random_states(),
            "window": self.monitor.state_dict() if self.monitor is not None else {"scalars": {}, "paths": []},
            "global_batch": self.global_batch,  # rows per step over all ranks (not in older checkpoints)
        }

    def load_state_dict(self, state: dict, path: str = "checkpoint") -> None:
        """Restore everything ``state_dict`` saved; mismatches raise CheckpointError naming ``path``."""
        missing = [key for key in STATE_KEYS if key not in state]
        if missing:
            raise CheckpointError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
        check_counts(state, path)
        load_module_state(self.model, state["model"], path, "the model")
        try:
            self.updates.load_state_dict(state["updates"], path)
            self.schedule.load_state_dict(state["schedule"])
            if self.monitor is not None:
                self.monitor.load_state_dict(state["window"])
            set_random_states(state["random"])
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as error:
            detail = str(error).splitlines()[0][:100] if str(error) else ""
            raise CheckpointError(f"{path}: malformed checkpoint ({type(error).__name__}: {detail})") from None
        self.step, self.policy_updates = state["step"], state["policy_updates"]
        self.ranks.seed_paths(self.config.seed, self.step)  # the checkpoint holds rank 0's stream only


def cxx_compiler_found() -> bool:
    """Whether torch.compile finds a C++ compiler (what it needs on the CPU)."""
    try:  # torch's own search, a private API: if a torch upgrade moves it, say so rather than crash
        from torch._inductor import cpp_builder

        cpp_builder.get_cpp_compiler()
        return True
    except Exception:  # noqa: BLE001 - InvalidCxxCompiler, or an ImportError after an upgrade
        return False


def compile_layers(model: JumpModel, device: torch.device) -> None:
    """``trainer.compile``: compile the stack's layers for full-depth steps, or say what is missing."""
    if device.type == "cpu" and not cxx_compiler_found():
        raise ConfigError("trainer.compile: torch.compile finds no C++ compiler (g++, or $CXX); set it false")
    model.stack.compile_full_depth()


def build(config: Config, monitor: Monitor | None = None, ranks: Ranks | None = None) -> Trainer:
    """Seed everything, make the task and its model, and a trainer over them: the one way to start a run.

    ``ranks``: this process's place in a torchrun job and its device (default: one rank on the CPU,
    whatever ``trainer.device`` says: train.py alone turns that into a device, so loaders of a
    finished run stay on the CPU).
    """
    seed_everything(config.seed)
    task = make_task(config.task, config.seed)
    trainer = Trainer(config, task, task.build_model(config.model), monitor, ranks)
    trainer.ranks.seed_paths(config.seed)
    return trainer


@contextlib.contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """SIGINT and SIGTERM ask ``trainer`` to stop after the current step (a second SIGINT aborts)."""

    def request_stop(signum, frame):
        trainer.signal_received = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
