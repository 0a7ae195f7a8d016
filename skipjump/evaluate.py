"""Evaluation of jump policies: greedy and full depth, and references at the greedy policy's compute.

random_matched solves for random skipping's jump probability p (exact expected compute, no
sampling); static_matched, cascade_matched and (for a task whose samples carry a difficulty)
difficulty_matched are chosen on rows the network never trained on (the trainer's held-out rows,
or the training split), never on the test split;
oracle_matched is a ceiling that reads the test labels. ``gap_closed`` = (greedy - static) /
(oracle - static): the share of per-sample routing's headroom the policy takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from skipjump.path_scores import (
    PathScores,
    apply_cascade,
    candidate_paths,
    cascade_rule,
    oracle_assignment,
    path_per_group,
    score_paths,
    static_path,
)
from skipjump.paths import next_layer, path_to_actions, paths_to_actions
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
        inputs = split.inputs[start : start + batch_size].to(model.device)
        targets = split.targets[start : start + batch_size].to(model.device)
        outputs, trace = model(inputs, routing)
        parts["actions"].append(trace.actions)
        parts["executed"].append(trace.executed)
        parts["loss"].append(task.per_sample_loss(outputs, targets))
        parts["correct"].append(task.correct(outputs, targets))
        parts["compute"].append(trace.compute_fraction)
    model.train(was_training)
    cat = {k: torch.cat(v).cpu() for k, v in parts.items()}
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
    return model.embed(split.inputs[:1].to(model.device)).shape[1]


def run_path(model: JumpModel, task: Task, split: Split, path: tuple[int, ...], batch_size: int = 512) -> Evaluation:
    """Every sample of ``split`` along one fixed path."""
    actions = path_to_actions(path, model.stack.num_layers, model.stack.config.max_jump)
    return run_policy(model, task, split, Routing("fixed", actions=actions), batch_size)


def from_assignment(
    split: Split, paths: list[tuple[int, ...]], choice: np.ndarray, correct, loss, compute, stack: JumpStack
) -> Evaluation:
    """An Evaluation of per-sample paths chosen outside the model (the oracle, the cascade)."""
    masks = np.zeros((len(paths), stack.num_layers), dtype=bool)
    for i, path in enumerate(paths):
        masks[i, list(path)] = True
    actions = paths_to_actions(paths, stack.num_layers, stack.config.max_jump).numpy()
    executed = masks[choice]
    summary = {
        "accuracy": float(correct.mean()),
        "loss": float(loss.mean()),
        "layers_mean": float(executed.sum(axis=1).mean()),
        "compute_fraction": float(compute.mean()),
        "unique_paths": int(np.unique(choice).size),
        "layer_rate": [round(float(r), 4) for r in executed.mean(axis=0)],
    }
    samples = {
        "actions": actions[choice],
        "layers_executed": executed.sum(axis=1),
        "executed": executed,
        "label": split.targets.numpy(),
        "correct": correct,
        "loss": loss.astype(np.float32),
        "compute_fraction": compute.astype(np.float32),
    }
    return Evaluation(summary, samples)


def subsample(split: Split, rows: int, seed: int) -> Split:
    """At most ``rows`` rows of ``split``, chosen with a seeded generator (path selection is P passes)."""
    if len(split) <= rows:
        return split
    return split.rows(torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:rows])


def fewest_layers(scores: PathScores) -> np.ndarray:
    """(N,) per sample, the fewest layers of a fixed path that solves it (gives the right answer a
    probability of at least 1/2, so a path right by a lucky argmax does not count); -1 where none does."""
    layers = np.array([len(path) for path in scores.paths])[:, None]
    solved = scores.loss <= np.log(2.0)
    fewest = np.where(solved, layers, np.iinfo(np.int64).max).min(axis=0)
    return np.where(solved.any(axis=0), fewest, -1)


def needed_layers(scores: PathScores, difficulty: np.ndarray, share: float = 0.95) -> dict[str, int | None]:
    """Per difficulty, the fewest layers of one fixed path that answers at least ``share`` of what
    full depth answers right on those samples: read off many samples, so luck averages out.
    None where full depth answers none of them."""
    layers = np.array([len(path) for path in scores.paths])
    needed = {}
    for k in np.unique(difficulty):
        accuracy = scores.correct[:, difficulty == k].mean(axis=1)
        if accuracy[-1] == 0:  # the last path is full depth
            needed[str(int(k))] = None
            continue
        needed[str(int(k))] = int(layers[accuracy >= share * accuracy[-1]].min())
    return needed


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation (ties get their average rank); None if either side is constant."""

    def ranks(x: np.ndarray) -> np.ndarray:
        _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        return ((ends - counts + ends - 1) / 2)[inverse]

    ra, rb = ranks(np.asarray(a)), ranks(np.asarray(b))
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def by_difficulty(samples: dict[str, np.ndarray], difficulty: np.ndarray) -> dict:
    """Spearman(layers run, difficulty) and, per difficulty, the samples' accuracy and layers run."""
    layers = samples["layers_executed"]
    table = {
        str(int(k)): {
            "samples": int((difficulty == k).sum()),
            "accuracy": float(samples["correct"][difficulty == k].mean()),
            "layers_mean": float(layers[difficulty == k].mean()),
        }
        for k in np.unique(difficulty)
    }
    return {"spearman_layers_difficulty": spearman(layers, difficulty), "by_difficulty": table}


def gap_closed(greedy: float, static: float, oracle: float, samples: int) -> float | None:
    """(greedy - static) / (oracle - static); None where the headroom is under two samples."""
    return None if oracle - static < 2 / samples else (greedy - static) / (oracle - static)


def evaluate(
    model: JumpModel,
    task: Task,
    batch_size: int = 512,
    seed: int = 0,
    first_decision: int = 0,
    selection: Split | None = None,
    selection_rows: int = 5000,
) -> dict[str, Evaluation]:
    """The greedy policy against full depth and references at its compute, on the test split.

    random_matched  random skipping whose expected compute equals the policy's
    static_matched  the best fixed path costing no more, chosen on ``selection``
    cascade_matched a cheap path, then full depth for the least confident (rule set on ``selection``)
    difficulty_matched  where samples carry a difficulty (k-hop's k): one path per difficulty, chosen on
                    ``selection`` (the budget met on its mix of k, so the test compute differs a little; a k
                    it lacks runs the static path); what a policy that reads only k could do
    oracle_matched  each test sample its own path (reads the labels: a ceiling, see path_scores.py)

    first_decision: the curriculum's; the greedy policy makes only the decisions it was trained on.
    selection: rows the network never trained on (train.py: the held-out rows; default: the training split),
        at most ``selection_rows``.
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

    paths, searched = candidate_paths(stack.num_layers, stack.config.max_jump, seed=seed)
    chosen_on = subsample(task.train if selection is None else selection, selection_rows, seed)
    picked = score_paths(model, task, chosen_on, paths, searched, batch_size)
    test = score_paths(model, task, task.test, paths, searched, batch_size)
    static_index = static_path(picked, budget)
    static = paths[static_index]
    results["static_matched"] = run_path(model, task, task.test, static, batch_size)
    results["static_matched"].summary["path"] = list(static)

    cheap, threshold = cascade_rule(picked, budget)
    correct, loss, compute = apply_cascade(test, cheap, threshold)
    full = len(paths) - 1
    choice = np.where(test.confidence[cheap] < threshold, full, cheap)
    cascade = from_assignment(task.test, paths, choice, correct, loss, compute, stack)
    cascade.summary.update(path=list(paths[cheap]), threshold=threshold, escalated=float((choice == full).mean()))
    results["cascade_matched"] = cascade

    columns = np.arange(len(task.test))
    if task.test.difficulty is not None and chosen_on.difficulty is not None:
        per_k = path_per_group(picked, chosen_on.difficulty.numpy(), budget)
        for k in np.unique(task.test.difficulty.numpy()):
            per_k.setdefault(int(k), static_index)  # a difficulty the selection rows lack
        choice = np.array([per_k[int(k)] for k in task.test.difficulty.numpy()])
        picks = test.correct[choice, columns], test.loss[choice, columns], test.cost[choice]
        results["difficulty_matched"] = from_assignment(task.test, paths, choice, *picks, stack)
        results["difficulty_matched"].summary["paths"] = {str(k): list(paths[p]) for k, p in per_k.items()}

    choice = oracle_assignment(test, budget)
    oracle = from_assignment(
        task.test,
        paths,
        choice,
        test.correct[choice, columns],
        test.loss[choice, columns],
        test.cost[choice],
        stack,
    )
    oracle.summary["searched"] = searched
    results["oracle_matched"] = oracle
    if task.test.difficulty is not None:
        difficulty, fewest = task.test.difficulty.numpy(), fewest_layers(test)
        solvable = fewest >= 0
        for result in results.values():
            result.samples.update(difficulty=difficulty, fewest_layers=fewest)
            result.summary.update(by_difficulty(result.samples, difficulty))
        needed = needed_layers(test, difficulty)
        for k, row in results["greedy"].summary["by_difficulty"].items():
            chosen = solvable & (difficulty == int(k))
            row["fewest_layers_mean"] = float(fewest[chosen].mean()) if chosen.any() else None
            row["solvable"] = float(chosen.sum() / max(1, row["samples"]))
            row["needed_layers"] = needed[k]
        results["greedy"].summary["spearman_fewest_difficulty"] = spearman(fewest[solvable], difficulty[solvable])
    for name in ("greedy", "difficulty_matched"):
        if name in results:
            results[name].summary["gap_closed"] = gap_closed(
                results[name].summary["accuracy"],
                results["static_matched"].summary["accuracy"],
                oracle.summary["accuracy"],
                len(task.test),
            )
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


def format_difficulty(summaries: dict[str, dict]) -> str:
    """Per difficulty: the fewest layers a fixed path needs, and accuracy / layers run of each policy."""
    greedy = summaries["greedy"]
    names = [
        name
        for name in ("greedy", "full", "static_matched", "cascade_matched", "difficulty_matched", "oracle_matched")
        if name in summaries
    ]
    header = f"{'k':>3}{'samples':>9}{'needed':>8}{'fewest':>8}"
    lines = [header + "".join(f"{name[:14]:>16}" for name in names)]
    for k, row in greedy["by_difficulty"].items():
        fewest = row["fewest_layers_mean"]
        cells = "".join(
            f"{summaries[n]['by_difficulty'][k]['accuracy']:>10.3f}/{summaries[n]['by_difficulty'][k]['layers_mean']:<5.2f}"
            for n in names
        )
        lines.append(
            f"{k:>3}{row['samples']:>9}{str(row['needed_layers'] or '-'):>8}"
            f"{'-' if fewest is None else f'{fewest:.2f}':>8}{cells}"
        )
    rho = {n: summaries[n]["spearman_layers_difficulty"] for n in names}
    lines.append(
        "accuracy/layers per k; Spearman(layers run, k): "
        + ", ".join(f"{n} {'n/a' if r is None else f'{r:+.2f}'}" for n, r in rho.items())
    )
    fewest_rho = greedy["spearman_fewest_difficulty"]
    lines.append(
        "needed: fewest layers of one path reaching 95% of full depth's accuracy on that k; fewest: mean per sample of"
        " the fewest layers of a path giving its answer p >= 1/2 (lucky paths count: a floor); Spearman(fewest, k) = "
        + ("n/a" if fewest_rho is None else f"{fewest_rho:+.2f}")
    )
    return "\n".join(lines)
