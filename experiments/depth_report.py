"""Which inputs does the policy send deeper? Per-label and per-depth summary of a run's traces.

    python experiments/depth_report.py RUN_DIR [--policy greedy]

Reads RUN_DIR/traces/<policy>.npz (written by train.py) and prints the mean number of layers
run for each label, then, for each number of layers, how many samples ran it and how many of
them were right.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--policy", default="greedy", help="greedy, full, random_matched or static_matched")
    args = parser.parse_args()
    path = Path(args.run_dir) / "traces" / f"{args.policy}.npz"
    if not path.is_file():
        print(f"error: no such trace file: {path}", file=sys.stderr)
        return 2
    with np.load(path) as trace:
        layers, labels, correct = trace["layers_executed"], trace["label"], trace["correct"]

    print(f"{path}: {len(labels)} samples")
    print("label  samples  mean layers")
    for label in np.unique(labels):
        chosen = labels == label
        print(f"{label:>5}{chosen.sum():>9}{layers[chosen].mean():>13.2f}")
    print("layers  samples  accuracy")
    for depth in np.unique(layers):
        chosen = layers == depth
        print(f"{depth:>6}{chosen.sum():>9}{correct[chosen].mean():>10.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
