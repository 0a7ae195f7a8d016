"""Every fixed path on every sample, and the references read off that table.

    static     the most accurate single path (ties: lower loss) costing <= budget
    oracle     each sample its own path, mean compute <= budget: maximise the number right (ties:
               lower loss) by a Lagrangian, score_np - mu * cost_p per sample, with bisection on mu.
               It reads the labels and, over dozens of paths, some are right by luck: a ceiling,
               never something a policy could reach.
    per group  one path per group of samples (e.g. per difficulty k), mean compute <= budget: what a
               router that reads only the group could do at best (exact: groups are few)
    cascade    the early-exit systems' baseline (CALM, DeeBERT): a cheap path for everyone, then
               full depth for the least confident samples (top softmax probability under a
               threshold), paying for both; it needs no policy.

All of them take a :class:`PathScores` of (paths x samples) results, so each path runs once.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from skipjump.paths import enumerate_paths, path_to_actions, paths_to_actions
from skipjump.stack import Routing
from skipjump.tasks.base import JumpModel, Split, Task

MAX_PATHS = 256  # beyond this many distinct paths, a seeded random subset (plus the full path) is scored


@dataclass
class PathScores:
    paths: list[tuple[int, ...]]  # P paths; the last is full depth
    cost: np.ndarray  # (P,) compute fraction of each path, final MLP included
    correct: np.ndarray  # (P, N) bool
    loss: np.ndarray  # (P, N)
    confidence: np.ndarray  # (P, N) the task's confidence in its answer (top softmax probability)
    searched: str  # "all 56 paths", or which subset

    def score(self) -> np.ndarray:
        """(P, N) correct, with a tie-break by lower loss that never outweighs one more sample right."""
        spread = float(self.loss.max() - self.loss.min()) or 1.0
        return self.correct.astype(np.float64) - 1e-3 * (self.loss - self.loss.min()) / spread


def candidate_paths(num_layers: int, max_jump: int, limit: int = MAX_PATHS, seed: int = 0) -> tuple[list, str]:
    """Every path when there are at most ``limit``; else a seeded random ``limit`` of them, full depth included."""
    paths = enumerate_paths(num_layers, max_jump)
    if len(paths) <= limit:
        return paths, f"all {len(paths)} paths"
    chosen = np.random.default_rng(seed).choice(len(paths) - 1, size=limit - 1, replace=False)
    return [paths[i] for i in sorted(chosen)] + [paths[-1]], f"a random {limit} of {len(paths)} paths"


@torch.no_grad()
def score_paths(
    model: JumpModel, task: Task, split: Split, paths: list[tuple[int, ...]], searched: str, batch_size: int = 512
) -> PathScores:
    """Run each path over the whole split (eval mode) and keep the per-sample results."""
    stack = model.stack
    was_training = model.training
    model.eval()
    rows = {"correct": [], "loss": [], "confidence": [], "cost": []}
    for path in paths:
        routing = Routing("fixed", actions=path_to_actions(path, stack.num_layers, stack.config.max_jump))
        parts = {"correct": [], "loss": [], "confidence": []}
        for start in range(0, len(split), batch_size):
            outputs, trace = model(split.inputs[start : start + batch_size].to(model.device), routing)
            targets = split.targets[start : start + batch_size].to(model.device)
            parts["correct"].append(task.correct(outputs, targets))
            parts["loss"].append(task.per_sample_loss(outputs, targets))
            parts["confidence"].append(task.confidence(outputs))
        for key, values in parts.items():
            rows[key].append(torch.cat(values).cpu().numpy())
        rows["cost"].append(float(trace.compute_fraction[0]))
    model.train(was_training)
    return PathScores(
        paths=list(paths),
        cost=np.array(rows["cost"]),
        correct=np.stack(rows["correct"]),
        loss=np.stack(rows["loss"]),
        confidence=np.stack(rows["confidence"]),
        searched=searched,
    )


def static_path(scores: PathScores, budget: float) -> int:
    """Index of the most accurate path (ties: lower mean loss) costing <= budget (else the cheapest)."""
    affordable = np.flatnonzero(scores.cost <= budget + 1e-9)
    if affordable.size == 0:
        return int(np.argmin(scores.cost))
    accuracy, loss = scores.correct[affordable].mean(axis=1), scores.loss[affordable].mean(axis=1)
    best = max(range(affordable.size), key=lambda i: (accuracy[i], -loss[i]))
    return int(affordable[best])


def oracle_assignment(scores: PathScores, budget: float, iterations: int = 60) -> np.ndarray:
    """(N,) path index per sample, mean cost <= budget, maximising the number right (ties: lower loss)."""
    score = scores.score()

    def assign(mu: float) -> np.ndarray:
        return np.argmax(score - mu * scores.cost[:, None], axis=0)

    free = assign(0.0)
    if scores.cost[free].mean() <= budget + 1e-9:
        return free
    low, high = 0.0, 1.0
    while scores.cost[assign(high)].mean() > budget + 1e-9 and high < 1e6:
        high *= 2
    for _ in range(iterations):  # the smallest mu whose assignment fits the budget
        mid = (low + high) / 2
        low, high = (mid, high) if scores.cost[assign(mid)].mean() > budget + 1e-9 else (low, mid)
    return assign(high)


def path_per_group(scores: PathScores, groups: np.ndarray, budget: float) -> dict[int, int]:
    """One path index per group (e.g. per difficulty k), mean cost over the samples <= budget,
    maximising the number right (ties: lower total loss, then lower cost). Exact: groups are few, so
    the Pareto front of partial choices is built group by group (a Lagrangian over six groups can
    leave much of the budget unspent)."""
    keys = np.unique(groups)
    masks = [groups == g for g in keys]
    sizes = np.array([mask.sum() for mask in masks])
    right = np.stack([scores.correct[:, mask].sum(axis=1) for mask in masks], axis=1)  # (P, G) counts
    loss = np.stack([scores.loss[:, mask].sum(axis=1) for mask in masks], axis=1)
    limit = budget * sizes.sum() + 1e-9
    front: list[tuple] = [(0.0, 0, 0.0, ())]  # (cost, -right, loss, paths so far), cost ascending
    for g, size in enumerate(sizes):
        grown = sorted(
            (cost + size * scores.cost[p], wrong - int(right[p, g]), lost + float(loss[p, g]), chosen + (p,))
            for cost, wrong, lost, chosen in front
            for p in range(len(scores.paths))
            if cost + size * scores.cost[p] <= limit
        )
        front = []
        for item in grown:  # by cost: keep what beats everything cheaper (more right, then less loss)
            if not front or item[1:3] < front[-1][1:3]:
                front.append(item)
        if not front:  # nothing fits: the cheapest path for every group
            return {int(k): int(np.argmin(scores.cost)) for k in keys}
    return {int(k): int(p) for k, p in zip(keys, front[-1][3])}


def cascade_rule(scores: PathScores, budget: float) -> tuple[int, float]:
    """(cheap path index, confidence threshold) with the most samples right on ``scores``' split, the
    cheap path for all and full depth too below the threshold, at mean compute <= budget."""
    full = len(scores.paths) - 1
    best, best_key = (int(np.argmin(scores.cost)), -np.inf), -1.0  # nothing affordable: no escalation
    for p in np.flatnonzero(scores.cost < budget):
        share = min(1.0, (budget - scores.cost[p]) / scores.cost[full])  # of samples that can also run full
        escalate = int(np.floor(share * scores.correct.shape[1]))
        ranked = np.sort(scores.confidence[p])
        threshold = -np.inf if escalate == 0 else (ranked[escalate] if escalate < ranked.size else np.inf)
        answer = np.where(scores.confidence[p] < threshold, scores.correct[full], scores.correct[p])
        if answer.mean() > best_key:
            best, best_key = (int(p), float(threshold)), answer.mean()
    return best


def apply_cascade(scores: PathScores, cheap: int, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample on ``scores``' split: (correct, loss, compute fraction) of the cascade."""
    full = len(scores.paths) - 1
    escalated = scores.confidence[cheap] < threshold
    correct = np.where(escalated, scores.correct[full], scores.correct[cheap])
    loss = np.where(escalated, scores.loss[full], scores.loss[cheap])
    compute = scores.cost[cheap] + escalated * scores.cost[full]
    return correct, loss, compute


def oracle_actions(
    model: JumpModel, task: Task, split: Split, budget: float, seed: int = 0, batch_size: int = 512
) -> torch.Tensor:
    """(N, L - 1) actions of each row's oracle path at mean compute <= ``budget``: the paths a policy
    imitates. A row counts as solved only where the path gives its answer a probability >= 1/2, so
    a short path right by a lucky argmax is not taught. Path costs leave out the policy's own
    FLOPs, so the imitated paths spend a little more than ``budget``; dual ascent corrects it."""
    stack = model.stack
    paths, searched = candidate_paths(stack.num_layers, stack.config.max_jump, seed=seed)
    scores = score_paths(model, task, split, paths, searched, batch_size)
    choice = oracle_assignment(dataclasses.replace(scores, correct=scores.loss <= math.log(2.0)), budget)
    table = paths_to_actions(paths, stack.num_layers, stack.config.max_jump)
    return table[torch.from_numpy(choice)]
