"""How much could per-sample paths gain over one fixed path? Every fixed path of a trained run.

    python experiments/path_study.py RUN_DIR

Runs every distinct path on the test split and prints, for each number of layers run: the
compute of the cheapest such path, the best and mean accuracy of a fixed path of that length,
and the per-sample oracle (a sample counts as right if any path of that length gets it right).
For a task with a known difficulty (k-hop) it then prints, for each difficulty, the best fixed
path's accuracy at each length: the layers that difficulty needs, read off many samples.
The run directory is read through ``skipjump.runs`` (nothing in it can run code); a missing or
bad file is one line ``error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from skipjump import enumerate_paths
from skipjump.evaluate import path_compute_fraction, run_path, sequence_length
from skipjump.provenance import header
from skipjump.runs import LOAD_ERRORS, load_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    args = parser.parse_args(argv)

    try:
        config, task, model = load_run(args.run_dir)
    except LOAD_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    layers, max_jump = config.model.num_layers, config.model.max_jump
    tokens = sequence_length(model, task.test)
    by_length: dict[int, list[tuple[tuple[int, ...], float, np.ndarray]]] = {}
    for path in enumerate_paths(layers, max_jump):
        correct = run_path(model, task, task.test, path).samples["correct"]
        by_length.setdefault(len(path), []).append((path, path_compute_fraction(model.stack, tokens, path), correct))

    print(header())
    print(f"{args.run_dir}: {len(task.test)} test samples")
    print(f"{'layers':>6}{'paths':>7}{'compute':>9}{'best fixed':>12}{'mean fixed':>12}{'oracle':>8}  best path")
    for length, items in sorted(by_length.items()):
        accuracies = [float(c.mean()) for _, _, c in items]
        best = int(np.argmax(accuracies))
        oracle = float(np.any([c for _, _, c in items], axis=0).mean())
        compute = min(cf for _, cf, _ in items)
        print(
            f"{length:>6}{len(items):>7}{compute:>9.3f}{accuracies[best]:>12.4f}{np.mean(accuracies):>12.4f}"
            f"{oracle:>8.4f}  {items[best][0]}"
        )
    if task.test.difficulty is not None:
        difficulty = task.test.difficulty.numpy()
        lengths = sorted(by_length)
        print("best fixed path's accuracy per difficulty (rows) and layers run (columns)")
        print(f"{'k':>3}{'samples':>9}" + "".join(f"{length:>8}" for length in lengths))
        for k in np.unique(difficulty):
            chosen = difficulty == k
            best = [max(float(c[chosen].mean()) for _, _, c in by_length[length]) for length in lengths]
            print(f"{k:>3}{chosen.sum():>9}" + "".join(f"{value:>8.3f}" for value in best))
    return 0


if __name__ == "__main__":
    sys.exit(main())
