"""What watches training: the logging window, periodic evaluation and checkpoints.

A :class:`Monitor` is handed to the trainer at construction and called after every step. Every
``log_every`` steps it writes the window's mean statistics and the jump histograms of the paths
the policy picked; every ``eval_every`` steps it evaluates greedy and full depth on the test
split; every ``checkpoint_every`` steps (and at the end) it saves a checkpoint. The window is
part of the checkpoint, so a resumed run logs exactly what an unbroken one would.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import torch

from skipjump.config import TrainerConfig
from skipjump.evaluate import TASK_METRICS, Evaluation
from skipjump.runlog import RunLog

if TYPE_CHECKING:
    from skipjump.trainer import Trainer


class Monitor:
    def __init__(self, run: RunLog, config: TrainerConfig) -> None:
        self.run, self.config = run, config
        self.window: dict[str, list[float]] = defaultdict(list)
        self.window_paths: list[tuple[torch.Tensor, torch.Tensor]] = []  # (actions, executed)

    def start(self, trainer: Trainer) -> None:
        """From the first moment on, the run directory holds a loadable checkpoint."""
        if not self.run.checkpoint_path.exists():
            self.save(trainer)

    def after_step(
        self,
        trainer: Trainer,
        stats: dict[str, float],
        paths: tuple[torch.Tensor, torch.Tensor] | None,
        steps_per_second: float,
        last: bool = False,
    ) -> None:
        """``paths``: (actions, executed) of the step's samples when the policy picked their paths, else
        None; ``last``: the last step of this ``train`` call (always checkpointed)."""
        t, step = self.config, trainer.step
        for key, value in stats.items():
            self.window[key].append(value)
        if paths is not None:
            self.window_paths.append((paths[0].cpu(), paths[1].cpu()))
        if step % t.log_every == 0 or step == t.steps:
            self.log_window(step, steps_per_second, trainer.model.stack.thresholds())
        if t.eval_every and step % t.eval_every == 0 and step < t.steps:  # the last: the full evaluation
            self.log_evaluation(step, {name: trainer.evaluate_one(name) for name in ("greedy", "full")})
        if step % t.checkpoint_every == 0 or last:
            self.save(trainer)

    def log_window(self, step: int, steps_per_second: float, thresholds: list[float]) -> None:
        if self.window:
            values = {key: sum(v) / len(v) for key, v in self.window.items()}
            values["charts/steps_per_second"] = steps_per_second
            values.update({f"gates/threshold_layer{i}": threshold for i, threshold in enumerate(thresholds)})
            self.run.scalars(step, values)
        if self.window_paths:
            actions = torch.cat([a for a, _ in self.window_paths])
            executed = torch.cat([e for _, e in self.window_paths])
            self.run.jump_histograms(step, actions, executed)
        self.window.clear()
        self.window_paths.clear()

    def log_evaluation(self, step: int, results: dict[str, Evaluation]) -> None:
        values = {
            f"eval/{name}/{key}": float(result.summary[key]) for name, result in results.items() for key in TASK_METRICS
        }
        self.run.scalars(step, values)
        if "greedy" in results:
            samples = results["greedy"].samples
            actions, executed = torch.from_numpy(samples["actions"]), torch.from_numpy(samples["executed"])
            self.run.jump_histograms(step, actions, executed, "eval_jumps")
            self.run.depth_figure(step, executed)

    def save(self, trainer: Trainer) -> None:
        trainer.updates.check_parameters()  # a NaN never reaches a checkpoint
        self.run.flush()  # events first: resuming purges those after the checkpoint, never before
        self.run.save_checkpoint(trainer.state_dict())

    def state_dict(self) -> dict:
        return {"scalars": dict(self.window), "paths": list(self.window_paths)}

    def load_state_dict(self, state: dict) -> None:
        self.window = defaultdict(list, state["scalars"])
        self.window_paths = list(state["paths"])
