"""Greedy decoding at a compute budget: the price per skipped layer that spends it.

A policy trained to a compute target in expectation (``agent.target_compute``, over sampled
paths) decodes greedily to another mean compute, off by a point or three and differently per seed.
Greedy decoding with a price (``JumpPolicy.greedy_price``) picks, at each decision,

    argmax_a  logits[a] + price * a        (action a skips a layers)

so the price moves greedy's compute without retraining: > 0 skips more, < 0 less. ``calibrate``
bisects the price to the boundary where greedy's mean compute on given rows crosses the budget and
keeps the side checked within it; with ``fill=False`` the budget is only a cap, and greedy already
within it keeps price 0. Compute mostly falls as the price rises, but not strictly (tiny
steps the wrong way happen), so the price found is within budget and at a crossing, not
necessarily the one that spends the most. It reads no label: only the paths greedy takes.
"""

from __future__ import annotations

import torch

from skipjump.evaluate import run_policy
from skipjump.stack import Routing
from skipjump.tasks.base import JumpModel, Split, Task

WIDEST = 64.0  # the widest |price| searched, in logits; a budget greedy cannot reach within it: met=False
STEPS = 16  # bisection steps: the price to WIDEST / 2**16 logits


def greedy_compute(model: JumpModel, task: Task, rows: Split, price: float, routing: Routing, batch: int) -> float:
    """Greedy's mean compute fraction on ``rows`` at ``price`` (the policy's price is left at it)."""
    model.stack.policy.greedy_price.fill_(price)
    return float(run_policy(model, task, rows, routing, batch).summary["compute_fraction"])


@torch.no_grad()
def calibrate(
    model: JumpModel,
    task: Task,
    rows: Split,
    budget: float,
    first_decision: int = 0,
    batch_size: int = 512,
    fill: bool = True,
) -> dict[str, float]:
    """Set ``model``'s greedy price so that greedy's mean compute on ``rows`` is at most ``budget``, at a crossing
    (``fill=False``: price 0 where greedy is within the budget unpriced).

    Returns the price, greedy's compute on ``rows`` before and after, and ``met`` (after <= budget): where
    greedy cannot get under ``budget`` (even its longest jumps cost more), the price is the widest searched."""
    if not 0 < budget <= 1:
        raise ValueError(f"budget must be in (0, 1], got {budget}")
    routing = Routing("greedy", first_decision=first_decision)
    was_training = model.training
    model.eval()
    before = greedy_compute(model, task, rows, 0.0, routing, batch_size)
    if before <= budget and not fill:
        model.train(was_training)
        return {"price": 0.0, "compute_before": before, "compute_after": before, "met": True}
    # feasible: compute <= budget; the search keeps one feasible and one infeasible price around it
    if before <= budget:
        feasible, infeasible = 0.0, -1.0
        while infeasible > -WIDEST and greedy_compute(model, task, rows, infeasible, routing, batch_size) <= budget:
            feasible, infeasible = infeasible, 2 * infeasible
    else:
        infeasible, feasible = 0.0, 1.0
        while feasible < WIDEST and greedy_compute(model, task, rows, feasible, routing, batch_size) > budget:
            infeasible, feasible = feasible, 2 * feasible
    for _ in range(STEPS):
        middle = (feasible + infeasible) / 2
        if greedy_compute(model, task, rows, middle, routing, batch_size) <= budget:
            feasible = middle
        else:
            infeasible = middle
    after = greedy_compute(model, task, rows, feasible, routing, batch_size)
    model.train(was_training)
    return {"price": feasible, "compute_before": before, "compute_after": after, "met": after <= budget}
