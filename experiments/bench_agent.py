"""Cost of a policy-gradient step against a supervised step at the same batch, side by side.

    python experiments/bench_agent.py [--config skipjump/configs/digits.yaml] [--repeats 30] [--json]

For each baseline, times trainer.policy_step and trainer.supervised_step on the same batches,
interleaved, and prints the ratio per sampled path (leave_one_out samples K paths per input).
Target: <= 1.5.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from skipjump.config import load
from skipjump.provenance import header
from skipjump.trainer import build

BASELINES = ("moving_average", "self_critical", "leave_one_out", "value")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="skipjump/configs/digits.yaml")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    results = {}
    for baseline in BASELINES:
        config = load(args.config, [*args.overrides, f"agent.baseline={baseline}"])
        trainer = build(config)
        task, updates = trainer.task, trainer.updates
        # the supervised_path's routing, past any full-depth stage (trainer.full_depth_steps)
        routing = trainer.schedule.supervised_routing(0, step=config.trainer.full_depth_steps)
        batches = [trainer.schedule.next_rows("supervised") for _ in range(args.repeats + 3)]
        times = {"supervised": [], "policy": []}
        for i, index in enumerate(batches):
            inputs, targets = task.train.inputs[index], task.train.targets[index]
            for name in times:
                start = time.perf_counter()
                if name == "supervised":
                    updates.supervised(inputs, targets, routing)
                else:
                    updates.policy(inputs, targets)
                if i >= 3:  # warm-up
                    times[name].append(time.perf_counter() - start)
        paths = updates.agent.samples_per_input
        supervised, policy = statistics.median(times["supervised"]), statistics.median(times["policy"])
        results[baseline] = {
            "supervised_ms": 1000 * supervised,
            "policy_ms": 1000 * policy,
            "paths_per_input": paths,
            "ratio_per_path": policy / paths / supervised,
        }
    if args.json:
        print(json.dumps(results))
        return
    print(header())
    print(f"batch {config.trainer.batch_size}, median of {args.repeats}; target: ratio per path <= 1.5")
    print(f"{'baseline':<16}{'supervised ms':>14}{'policy ms':>11}{'paths':>7}{'ratio/path':>12}")
    for name, r in results.items():
        print(
            f"{name:<16}{r['supervised_ms']:>14.1f}{r['policy_ms']:>11.1f}{r['paths_per_input']:>7d}"
            f"{r['ratio_per_path']:>12.2f}"
        )


if __name__ == "__main__":
    main()
