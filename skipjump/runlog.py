"""A run directory and what is written into it.

RUN_DIR/config.yaml        the resolved config
RUN_DIR/metrics.jsonl      one JSON object per logging step
RUN_DIR/events.out.tfevents.*   TensorBoard: scalars grouped train/ policy/ gates/ eval/,
                           histograms jumps/layer<i>, jumps/depth, jumps/layer_usage; the share of
                           each action after each layer as scalars jumps_share/layer<i>/action<a>
                           (one Custom Scalars chart per layer); eval_jumps/depth_bars images
RUN_DIR/summary.json       final evaluation, one entry per evaluated policy
RUN_DIR/traces/<policy>.npz  per-sample evaluation paths
RUN_DIR/checkpoints/last.pt
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from skipjump.checkpoint import save_checkpoint
from skipjump.config import Config, to_yaml
from skipjump.plots import depth_bars


def hyperparameter_table(config: Config) -> str:
    """Markdown table of every config field, as TensorBoard's text tab shows it."""
    rows = []

    def walk(node, prefix):
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            else:
                rows.append(f"|{prefix}{f.name}|{value}|")

    walk(config, "")
    return "|param|value|\n|-|-|\n" + "\n".join(rows)


class RunLog:
    """Writes one run directory. Nothing touches the disk until :meth:`open`."""

    def __init__(self, run_dir: str | Path, config: Config, resume_step: int | None = None) -> None:
        """``resume_step``: continue a run whose checkpoint is at that step; whatever an earlier,
        interrupted process logged after it is dropped, so no step is lost or repeated."""
        self.dir = Path(run_dir)
        self.config, self.resume_step = config, resume_step
        self.checkpoint_path = checkpoint_path(self.dir)
        self.num_layers = config.model.num_layers
        self.max_jump = config.model.max_jump
        self.writer: SummaryWriter | None = None

    def open(self) -> None:
        """Create the directory, write the config, start the event file; OSError if it cannot be written."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "config.yaml.tmp"  # a kill mid-write must not leave a run that cannot resume
        tmp.write_text(to_yaml(self.config))
        tmp.replace(self.dir / "config.yaml")
        purge_step = None
        if self.resume_step is not None:
            self._trim_metrics(self.resume_step)
            purge_step = self.resume_step + 1  # TensorBoard hides older events from this step on
        self.writer = SummaryWriter(str(self.dir), purge_step=purge_step)
        if self.resume_step is None:
            self.writer.add_text("hyperparameters", hyperparameter_table(self.config))
            self.writer.add_custom_scalars(self.share_layout())

    def share_layout(self) -> dict:
        """Custom Scalars: one chart per layer holding the share of each of its jump actions."""
        return {
            f"{prefix}_share ({what})": {
                f"after layer {i}": ["Multiline", [rf"{prefix}_share/layer{i}/action\d+"]]
                for i in range(self.num_layers - 2)  # after layer L - 2 nothing is decided
            }
            for prefix, what in (("jumps", "sampled in training"), ("eval_jumps", "greedy on the test split"))
        }

    def _trim_metrics(self, last_step: int) -> None:
        path = self.dir / "metrics.jsonl"
        if not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= last_step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                pass  # a line cut short by a kill
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        tmp.replace(path)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def jump_histograms(self, step: int, actions: torch.Tensor, executed: torch.Tensor, prefix: str = "jumps") -> None:
        """actions (N, L - 1) with -1 for no decision; executed (N, L) bool."""
        action_bins = np.arange(-0.5, self.max_jump + 1.0)
        for i in range(self.num_layers - 1):
            decided = actions[:, i][actions[:, i] >= 0]
            if decided.numel():  # add_histogram raises on empty input
                self.writer.add_histogram(f"{prefix}/layer{i}", decided.numpy(), step, bins=action_bins)
                shares = torch.bincount(decided, minlength=self.max_jump + 1).float() / decided.numel()
                for a, share in enumerate(shares.tolist()):  # histograms re-bin integers into ramps
                    self.writer.add_scalar(f"{prefix}_share/layer{i}/action{a}", share, step)
        depth_bins = np.arange(0.5, self.num_layers + 1.0)
        self.writer.add_histogram(f"{prefix}/depth", executed.sum(dim=1).numpy(), step, bins=depth_bins)
        usage = torch.nonzero(executed)[:, 1].numpy()
        self.writer.add_histogram(f"{prefix}/layer_usage", usage, step, bins=np.arange(-0.5, self.num_layers))

    def depth_figure(self, step: int, executed: torch.Tensor, tag: str = "eval_jumps/depth_bars") -> None:
        """The distribution of layers run, as a bar chart (TensorBoard's histograms blur integers)."""
        depth = executed.sum(dim=1).numpy()
        self.writer.add_figure(tag, depth_bars(depth, self.num_layers, f"layers run, step {step}"), step)

    def write_summary(self, step: int, summaries: dict[str, dict], samples: dict[str, dict[str, np.ndarray]]) -> None:
        (self.dir / "summary.json").write_text(json.dumps({"step": step, **summaries}, indent=2) + "\n")
        traces = self.dir / "traces"
        traces.mkdir(exist_ok=True)
        for name, arrays in samples.items():
            np.savez_compressed(traces / f"{name}.npz", **arrays)

    def save_checkpoint(self, state: dict) -> None:
        save_checkpoint(self.checkpoint_path, state)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.pt"
