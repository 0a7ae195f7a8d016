"""Where a training step's time goes: torch.profiler over supervised and policy steps of a config.

    python experiments/profile_step.py [--config skipjump/configs/digits.yaml] [--steps 20] [--rows 15]
                                       [--run RUN_DIR] [--out FILE] [key=value ...]

Builds the run as train.py would (no run directory; with ``--run``, a trained run's config and
last weights instead, as the policy is at the end of training), warms up, then profiles
``--steps`` supervised steps and ``--steps`` policy steps (the alternating phase's two kinds) and
prints, for each, the wall-clock milliseconds per step and the part inside the stack's layers,
the time inside ``backward``, and the operators with the most self time; for full-depth
supervised steps also their matmul FLOPs per second beside what one product of the same shapes
reaches alone (how much of the step is arithmetic, how much per-operation overhead). Issue 8 asked what
bounds the demo's training time; this is the answer's source.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import profile

from skipjump.config import load
from skipjump.evaluate import sequence_length
from skipjump.provenance import header
from skipjump.runs import load_trained
from skipjump.trainer import Trainer, build


def timed_steps(trainer: Trainer, step: int, count: int) -> list[float]:
    """Wall-clock seconds of ``count`` steps from ``step`` on (the schedule picks their kind)."""
    seconds = []
    for _ in range(count):
        trainer.step = step
        started = time.perf_counter()
        trainer.train_step()
        seconds.append(time.perf_counter() - started)
    return seconds


def layer_seconds(trainer: Trainer, step: int, count: int) -> float:
    """Median seconds per step spent in the stack's layer calls (forward), over ``count`` steps."""
    spent: list[float] = []  # start times negated, end times added
    hooks = [
        hook
        for layer in trainer.model.stack.layers
        for hook in (
            layer.register_forward_pre_hook(lambda *_: spent.append(-time.perf_counter())),
            layer.register_forward_hook(lambda *_: spent.append(time.perf_counter())),
        )
    ]
    per_step = []
    for _ in range(count):
        spent.clear()
        timed_steps(trainer, step, 1)
        per_step.append(sum(spent))
    for hook in hooks:
        hook.remove()
    return statistics.median(per_step)


def matmul_gflops(rows: int, dims: int, repeats: int = 50) -> float:
    """GFLOP/s of one (rows, D) @ (D, 3D) product alone (the layers' widest), the best of ``repeats``."""
    a, b = torch.randn(rows, dims), torch.randn(dims, 3 * dims)
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * rows * dims * 3 * dims / best / 1e9


def arithmetic(trainer: Trainer, seconds: float) -> str:
    """How far a full-depth supervised step runs from matmul speed: its FLOPs (the stack's matmuls,
    forward, and twice that for the backward) over its time, beside one product of its shapes."""
    model, batch = trainer.model, trainer.config.trainer.batch_size
    tokens = sequence_length(model, trainer.task.train)
    flops = 3 * batch * model.stack.full_depth_flops(tokens)
    rate = matmul_gflops(batch * tokens, model.stack.config.dims)
    return (
        f"matrix products: {flops / 1e9:.2f} GFLOP per step, so {flops / seconds / 1e9:.3g} GFLOP/s;"
        f" a ({batch * tokens} x {model.stack.config.dims}) @ ({model.stack.config.dims} x"
        f" {3 * model.stack.config.dims}) product alone runs at {rate:.3g} GFLOP/s here"
    )


def report(trainer: Trainer, name: str, step: int, steps: int, rows: int) -> str:
    full_depth = trainer.config.trainer.supervised_path == "full"
    timed_steps(trainer, step, 5)  # warm-up: allocator, optimiser state
    wall = timed_steps(trainer, step, steps)
    in_layers = layer_seconds(trainer, step, steps)
    with profile() as prof:
        timed_steps(trainer, step, steps)
    averages = prof.key_averages()
    backward = sum(e.cpu_time_total for e in averages if e.key.startswith("autograd::engine::evaluate_function"))
    lines = [
        f"\n## {name} steps: {1e3 * statistics.median(wall):.1f} ms per step (median of {steps}, unprofiled)",
        f"in the stack's layers (forward): {1e3 * in_layers:.1f} ms per step (median of {steps})",
        f"backward pass: {backward / 1e3 / steps:.1f} ms per step (profiled)",
        *([arithmetic(trainer, statistics.median(wall))] if name == "supervised" and full_depth else []),
        averages.table(sort_by="self_cpu_time_total", row_limit=rows),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="skipjump/configs/digits.yaml")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rows", type=int, default=15, help="operators listed per step kind")
    parser.add_argument("--run", metavar="RUN_DIR", help="a trained run's config and last weights (no overrides)")
    parser.add_argument("--out", help="also write the report here")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")

    if args.run and args.overrides:
        parser.error("--run takes the run's own config: no key=value overrides")
    trainer = load_trained(args.run)[0] if args.run else build(load(args.config, args.overrides))
    t = trainer.config.trainer
    if t.schedule != "alternate" or t.supervised_steps != 1 or t.policy_steps != 1:
        parser.error("profiles the default schedule: alternate, one supervised and one policy step per cycle")
    if t.curriculum_steps or t.imitation_steps:  # both depend on the policy updates made, which replays skew
        parser.error("profiles steps without trainer.curriculum_steps or trainer.imitation_steps")
    first_policy = t.warmup_steps + 1  # the warm-up, then supervised and policy steps alternate
    text = "\n".join(
        [
            header(),
            report(trainer, "supervised", 0, args.steps, args.rows),
            report(trainer, "policy", first_policy, args.steps, args.rows),
        ]
    )
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
