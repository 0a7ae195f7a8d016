"""Skip behaviour of a finished run, as tables a notebook or a script plots.

Everything is read from the run directory through the safe readers: ``summary.json``,
``traces/<policy>.npz`` (the test split, one row per input), ``metrics.jsonl`` and the TensorBoard
event files; only :func:`extreme_inputs` rebuilds the task's test split from ``config.yaml``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skipjump.runs import TraceError, read_config, read_trace
from skipjump.tasks import make_task
from skipjump.tasks.digits import from_patches

REFERENCES = ("greedy", "random_matched", "static_matched")


def newest_run(root: str | Path = "runs") -> Path | None:
    """The most recently finished run under ``root`` (one with a summary.json), or None."""
    summaries = sorted(Path(root).glob("**/summary.json"), key=lambda p: p.stat().st_mtime)
    return summaries[-1].parent if summaries else None


def summary(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise TraceError(f"{path}: no such file (has the run finished its evaluation?)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise TraceError(f"{path}: not a summary ({type(error).__name__})") from None


def layer_rates(run_dir: str | Path, policies: tuple[str, ...] = REFERENCES) -> dict[str, np.ndarray]:
    """Per policy, (L,) the share of test inputs that ran each layer."""
    return {name: read_trace(run_dir, name)["executed"].mean(axis=0) for name in policies}


@dataclass
class Groups:
    """Layers run per test input, split by ``by`` ("class" for digits, "difficulty" when known)."""

    by: str
    layers: dict[int, np.ndarray]  # group -> (n,) layers run by each input of that group


def layers_by_group(run_dir: str | Path, policy: str = "greedy") -> Groups:
    trace = read_trace(run_dir, policy)
    by, key = ("difficulty", trace["difficulty"]) if "difficulty" in trace else ("class", trace["label"])
    return Groups(by, {int(g): trace["layers_executed"][key == g] for g in np.unique(key)})


def accuracy_by_layers(run_dir: str | Path, policy: str = "greedy") -> dict[int, tuple[int, float]]:
    """Layers run -> (inputs that ran that many, their accuracy)."""
    trace = read_trace(run_dir, policy)
    layers, correct = trace["layers_executed"], trace["correct"]
    return {int(n): (int((layers == n).sum()), float(correct[layers == n].mean())) for n in np.unique(layers)}


def path_shares(run_dir: str | Path, policy: str = "greedy", top: int = 10) -> tuple[list[tuple[tuple, float]], int]:
    """The ``top`` most frequent paths (layers run), each with its share of test inputs; and how many are distinct."""
    executed = read_trace(run_dir, policy)["executed"]
    counts = Counter(tuple(int(i) for i in np.flatnonzero(row)) for row in executed)
    return [(path, n / len(executed)) for path, n in counts.most_common(top)], len(counts)


def training_curves(run_dir: str | Path, keys: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """From metrics.jsonl: key -> (steps, values) where the key was logged."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise TraceError(f"{path}: no such file")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    curves = {}
    for key in keys:
        logged = [(row["step"], row[key]) for row in rows if key in row]
        curves[key] = (np.array([s for s, _ in logged]), np.array([v for _, v in logged], dtype=float))
    return curves


@dataclass
class Histograms:
    """Discrete histograms over training, read back from TensorBoard event files."""

    values: np.ndarray  # (V,) the integer values (jump actions, or layers run)
    steps: np.ndarray  # (S,)
    counts: np.ndarray  # (S, V)

    def shares(self) -> np.ndarray:
        return self.counts / np.maximum(self.counts.sum(axis=1, keepdims=True), 1)


def histograms(run_dir: str | Path, tag: str) -> Histograms:
    """``tag`` (e.g. "jumps/layer0", "jumps/depth") as exact integer counts per logging step.

    The run log bins integers at half-integer edges, so each TensorBoard bucket (counted up to its
    right limit) holds one value: limit - 1/2.
    """
    from tensorboard.backend.event_processing.event_accumulator import HISTOGRAMS, EventAccumulator

    if not any(Path(run_dir).glob("events.out.tfevents.*")):
        raise TraceError(f"{run_dir}: no TensorBoard event files")
    accumulator = EventAccumulator(str(run_dir), size_guidance={HISTOGRAMS: 0})  # every file; resumes purged
    accumulator.Reload()
    if tag not in accumulator.Tags()[HISTOGRAMS]:
        raise TraceError(f"{run_dir}: no histogram {tag!r} in the event files")
    events = sorted(accumulator.Histograms(tag), key=lambda event: event.step)
    by_step = {event.step: event.histogram_value for event in events}
    tables = []
    for value in by_step.values():
        table = Counter()
        # the first bucket is an empty one TensorBoard adds on the left: it would decode to a value never seen
        for limit, count in zip(value.bucket_limit[1:], value.bucket[1:]):
            table[int(round(limit - 0.5))] += int(round(count))
        tables.append(table)
    values = np.array(sorted({v for table in tables for v in table if v >= 0}))
    counts = np.array([[table.get(v, 0) for v in values] for table in tables])
    return Histograms(values, np.array(list(by_step)), counts)


@dataclass
class Example:
    image: np.ndarray  # (8, 8)
    layers: int
    label: int
    correct: bool


def extreme_inputs(run_dir: str | Path, policy: str = "greedy", count: int = 6) -> tuple[list, list] | None:
    """The ``count`` test inputs that ran the fewest and the most layers, as digit images (None
    for a task without images); among ties, the first in test order. Rebuilds the test split
    from config.yaml (no download)."""
    config = read_config(run_dir)
    if config.task.name != "digits":
        return None
    test = make_task(config.task, config.seed).test
    trace = read_trace(run_dir, policy)
    if len(trace["label"]) != len(test) or not np.array_equal(trace["label"], test.targets.numpy()):
        raise TraceError(f"{run_dir}: traces/{policy}.npz does not match the test split config.yaml rebuilds")
    images = from_patches(test.inputs, config.task.patch).numpy()
    order = np.argsort(trace["layers_executed"], kind="stable")
    most = np.argsort(-trace["layers_executed"], kind="stable")

    def examples(rows: np.ndarray) -> list[Example]:
        return [
            Example(images[i], int(trace["layers_executed"][i]), int(trace["label"][i]), bool(trace["correct"][i]))
            for i in rows
        ]

    return examples(order[:count]), examples(most[:count])


def oracle_gap(run_dir: str | Path) -> dict[str, float] | None:
    """Accuracy of greedy, static_matched and oracle_matched and the gap closed, where evaluated."""
    s = summary(run_dir)
    if "oracle_matched" not in s:
        return None
    return {
        "greedy": s["greedy"]["accuracy"],
        "static_matched": s["static_matched"]["accuracy"],
        "oracle_matched": s["oracle_matched"]["accuracy"],
        "gap_closed": s["greedy"].get("gap_closed"),
    }
