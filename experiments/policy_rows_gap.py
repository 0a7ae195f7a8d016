"""Does the jump policy generalise? Its gap closed on the rows it trained on, against the test split.

    python experiments/policy_rows_gap.py RUN_DIR [RUN_DIR ...] [--out FILE]

For each finished run, the final evaluation (greedy against static_matched, cascade_matched and
oracle_matched at the greedy policy's compute, as train.py prints it) is made twice: on the
held-out part of the training split, which supervised steps never touch (with
``trainer.policy_rows=held_out`` the only rows policy steps read; with ``all``, the default, a
quarter of them; a generated task's fixed ``train`` rows) and on the test split. A policy that closes much more
of the gap on its own rows than on the test split has fitted those rows, not learned routing.
The static path and the cascade's rule are chosen on the policy's rows in both, as train.py does.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

from skipjump.evaluate import evaluate
from skipjump.provenance import header
from skipjump.runs import LOAD_ERRORS, load_trained
from skipjump.tasks.base import Task
from skipjump.trainer import Trainer

COLUMNS = ("greedy", "full", "static_matched", "cascade_matched", "oracle_matched")


def final_evaluation(trainer: Trainer, task: Task) -> list:
    """[accuracy per COLUMNS..., greedy compute, gap closed]: train.py's final evaluation, on ``task.test``."""
    config = trainer.config
    batch, first = config.trainer.eval_batch_size, trainer.first_decision()
    results = evaluate(trainer.model.eval(), task, batch, config.seed, first, trainer.policy_split)
    greedy = results["greedy"].summary
    return [*(results[c].summary["accuracy"] for c in COLUMNS), greedy["compute_fraction"], greedy["gap_closed"]]


def markdown_table(head: list[str], rows: list[list]) -> list[str]:
    """Rows of ``len(head)`` leading cells, then a ``final_evaluation``, as Markdown table lines."""
    names = [*head, *COLUMNS, "greedy compute", "gap_closed"]
    lines = ["| " + " | ".join(names) + " |", "|---" * len(names) + "|"]
    for row in rows:
        *evaluation, gap = row[len(head) :]
        cells = [*map(str, row[: len(head)]), *(f"{100 * value:.2f}%" for value in evaluation)]
        lines.append("| " + " | ".join([*cells, "n/a" if gap is None else f"{gap:.2f}"]) + " |")
    return lines


def rows_of(run_dir: str) -> list[list]:
    """[run, split, rows, *final_evaluation] for both splits."""
    trainer, _ = load_trained(run_dir)
    rows = []
    for name, split in (("policy rows", trainer.policy_split), ("test", trainer.task.test)):
        task = copy.copy(trainer.task)
        task.test = split
        rows.append([run_dir, name, len(split), *final_evaluation(trainer, task)])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--out", help="also write the report here (Markdown)")
    args = parser.parse_args(argv)
    try:
        rows = [row for run_dir in args.run_dirs for row in rows_of(run_dir)]
    except LOAD_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    lines = [header(), "", *markdown_table(["run", "rows", "n"], rows)]
    for split in ("policy rows", "test"):
        gaps = [row[-1] for row in rows if row[1] == split and row[-1] is not None]
        if gaps:
            spread = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
            lines.append(f"\ngap_closed on the {split}: mean {statistics.mean(gaps):.2f}, std {spread:.2f}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
