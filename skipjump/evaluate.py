"""Evaluation of jump policies: greedy, full depth, random skipping and the best fixed path.

random_matched and static_matched are matched to the greedy policy's mean compute fraction:
random skipping by solving for its jump probability p (exact expected compute, no sampling), the
fixed path as the most accurate path among those that cost no more, on the rows the policy was
trained on (the trainer's held-out policy rows, or the training split), never on the test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from skipjump.paths import enumerate_paths, next_layer, path_to_actions
from skipjump.stack import JumpStack, Routing, count_unique_rows
from skipjump.tasks.base import JumpModel, Split, Task

# What training and evaluation report for any set of paths, under train/, policy/ and eval/<policy>/.
TASK_METRICS = ("loss", "accuracy", "compute_fraction", "layers_mean", "unique_paths")


@dataclass
class Evaluation:
    summary: dict[str, float | int | list[float] | str]
    samples: dict[str, np.ndarray]  # per-sample arrays, saved to traces/<policy>.npz


@torch.no_grad()
def run_policy(model: JumpModel, task: Task, split: Split, routing: Routing, batch_size: int = 512) -> Evaluation:
    """Run ``routing`` over a whole split and summarise accuracy, loss and compute."""
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("actions", "executed", "loss", "correct", "compute")}
    for start in range(0, len(split), batch_size):
        inputs = split.inputs[start : start + batch_size]
        targets = split.targets[start : start + batch_size]
        outputs, trace = model(inputs, routing)
        parts["actions"].append(trace.actions)
        parts["executed"].append(trace.executed)
        parts["loss"].append(task.per_sample_loss(outputs, targets))
        parts["correct"].append(task.correct(outputs, targets))
        parts["compute"].append(trace.compute_fraction)
    model.train(was_training)
    cat = {k: torch.cat(v) for k, v in parts.items()}
    executed = cat["executed"]
    summary = {
        "accuracy": float(cat["correct"].float().mean()),
        "loss": float(cat["loss"].mean()),
        "layers_mean": float(executed.sum(dim=1).float().mean()),
        "compute_fraction": float(cat["compute"].mean()),
        "unique_paths": count_unique_rows(executed),
        "layer_rate": [round(float(r), 4) for r in executed.float().mean(dim=0)],
    }
    samples = {
        "actions": cat["actions"].numpy(),
        "layers_executed": executed.sum(dim=1).numpy(),
        "executed": executed.numpy(),
        "label": split.targets.numpy(),
        "correct": cat["correct"].numpy(),
        "loss": cat["loss"].numpy(),
        "compute_fraction": cat["compute"].numpy(),
    }
    return Evaluation(summary, samples)


def random_compute_fraction(stack: JumpStack, tokens: int, p: float) -> float:
    """Expected compute fraction of ``Routing("random", p)``, from the chain of layer visits."""
    num_layers, max_jump = stack.num_layers, stack.config.max_jump
    visit = np.zeros(num_layers)
    visit[0] = 1.0
    for i in range(num_layers - 1):
        visit[next_layer(i, 0, num_layers)] += visit[i] * (1 - p)
        visit[next_layer(i, max_jump, num_layers)] += visit[i] * p
    return float(stack.compute_fraction(torch.from_numpy(visit), tokens))


def match_random_p(stack: JumpStack, tokens: int, target: float) -> float:
    """The jump probability whose expected compute fraction equals ``target`` (bisection)."""
    low, high = 0.0, 1.0  # compute falls as p rises
    if target >= random_compute_fraction(stack, tokens, low):
        return low
    if target <= random_compute_fraction(stack, tokens, high):
        return high
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if random_compute_fraction(stack, tokens, mid) > target else (low, mid)
    return (low + high) / 2


def path_compute_fraction(stack: JumpStack, tokens: int, path: tuple[int, ...]) -> float:
    runs = torch.zeros(stack.num_layers)
    runs[list(path)] = 1.0
    return float(stack.compute_fraction(runs, tokens))


def sequence_length(model: JumpModel, split: Split) -> int:
    """Tokens per sample after the task's embedding (the FLOP counts depend on it)."""
    return model.embed(split.inputs[:1]).shape[1]


def run_path(model: JumpModel, task: Task, split: Split, path: tuple[int, ...], batch_size: int = 512) -> Evaluation:
    """Every sample of ``split`` along one fixed path."""
    actions = path_to_actions(path, model.stack.num_layers, model.stack.config.max_jump)
    return run_policy(model, task, split, Routing("fixed", actions=actions), batch_size)


def best_fixed_path(
    model: JumpModel, task: Task, split: Split, budget: float, batch_size: int = 512
) -> tuple[int, ...]:
    """The most accurate fixed path on ``split`` (ties: lower loss) costing <= budget."""
    stack = model.stack
    tokens = sequence_length(model, split)
    paths = enumerate_paths(stack.num_layers, stack.config.max_jump)
    affordable = [p for p in paths if path_compute_fraction(stack, tokens, p) <= budget + 1e-9] or paths[:1]
    best, best_key = affordable[0], None
    for path in affordable:
        s = run_path(model, task, split, path, batch_size).summary
        key = (s["accuracy"], -s["loss"])
        if best_key is None or key > best_key:
            best, best_key = path, key
    return best


def evaluate(
    model: JumpModel,
    task: Task,
    batch_size: int = 512,
    seed: int = 0,
    first_decision: int = 0,
    selection: Split | None = None,
) -> dict[str, Evaluation]:
    """Greedy, full depth, random matched and static matched, on the test split.

    first_decision: the curriculum's; the greedy policy makes only the decisions it was trained on.
    selection: where static_matched's path is chosen (default: the training split).
    """
    stack = model.stack
    tokens = sequence_length(model, task.test)
    greedy = Routing("greedy", first_decision=first_decision)
    results = {
        "greedy": run_policy(model, task, task.test, greedy, batch_size),
        "full": run_policy(model, task, task.test, Routing("full"), batch_size),
    }
    budget = results["greedy"].summary["compute_fraction"]
    p = match_random_p(stack, tokens, budget)
    with torch.random.fork_rng():  # evaluation must not shift the training run's random stream
        torch.manual_seed(seed)
        results["random_matched"] = run_policy(model, task, task.test, Routing("random", p=p), batch_size)
    results["random_matched"].summary["p"] = p
    path = best_fixed_path(model, task, task.train if selection is None else selection, budget, batch_size)
    results["static_matched"] = run_path(model, task, task.test, path, batch_size)
    results["static_matched"].summary["path"] = list(path)
    return results


def format_table(summaries: dict[str, dict]) -> str:
    """A plain-text table of the evaluated policies."""
    lines = [f"{'policy':<16}{'accuracy':>10}{'loss':>8}{'layers':>8}{'compute':>9}{'paths':>7}"]
    for name, s in summaries.items():
        lines.append(
            f"{name:<16}{s['accuracy']:>10.4f}{s['loss']:>8.3f}{s['layers_mean']:>8.2f}"
            f"{s['compute_fraction']:>9.3f}{s['unique_paths']:>7d}"
        )
    return "\n".join(lines)
