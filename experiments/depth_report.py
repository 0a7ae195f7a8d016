"""Which inputs does the policy send deeper? Per-label and per-depth summary of a run's traces.

    python experiments/depth_report.py RUN_DIR [--policy greedy]

Reads RUN_DIR/traces/<policy>.npz (written by train.py) and prints the mean number of layers
run for each label (for a task with a known difficulty, such as k-hop: for each difficulty, with
accuracy, the fewest layers a fixed path needs per sample and Spearman(layers run, difficulty)),
then, for each number of layers, how many samples ran it and how many of them were right (and,
where the run has a full-depth trace, how many full depth gets right of the same samples). The
trace is read through ``skipjump.runs.read_trace`` (``allow_pickle=False``: an object array is
refused, never unpickled); a missing or malformed file is one line ``error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from skipjump.evaluate import by_difficulty
from skipjump.provenance import header
from skipjump.runs import LOAD_ERRORS, read_trace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--policy", default="greedy", help="greedy, full, random_matched or static_matched")
    args = parser.parse_args(argv)
    # does depth help the inputs sent deep? full depth's answers on the same samples, where the run has them
    with_full = args.policy != "full" and (Path(args.run_dir) / "traces" / "full.npz").exists()
    try:
        trace = read_trace(args.run_dir, args.policy)
        full = read_trace(args.run_dir, "full")["correct"] if with_full else None
    except LOAD_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    layers, labels, correct = trace["layers_executed"], trace["label"], trace["correct"]

    print(header())
    print(f"{Path(args.run_dir) / 'traces' / f'{args.policy}.npz'}: {len(labels)} samples")
    if "difficulty" in trace:
        difficulty, fewest = trace["difficulty"], trace["fewest_layers"]
        table = by_difficulty(trace, difficulty)
        print("difficulty  samples  mean layers  accuracy  fewest layers (solvable samples)")
        for k, row in table["by_difficulty"].items():
            solvable = (difficulty == int(k)) & (fewest >= 0)
            need = f"{fewest[solvable].mean():.2f} ({solvable.sum()})" if solvable.any() else "- (0)"
            print(f"{k:>10}{row['samples']:>9}{row['layers_mean']:>13.2f}{row['accuracy']:>10.4f}  {need:>15}")
        rho = table["spearman_layers_difficulty"]
        print(f"Spearman(layers run, difficulty) = {'n/a' if rho is None else f'{rho:+.2f}'}")
    else:
        print("label  samples  mean layers")
        for label in np.unique(labels):
            chosen = labels == label
            print(f"{label:>5}{chosen.sum():>9}{layers[chosen].mean():>13.2f}")
    print("layers  samples  accuracy" + ("  full_depth" if full is not None else ""))
    for depth in np.unique(layers):
        chosen = layers == depth
        at_full = f"{full[chosen].mean():>12.4f}" if full is not None else ""
        print(f"{depth:>6}{chosen.sum():>9}{correct[chosen].mean():>10.4f}{at_full}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
