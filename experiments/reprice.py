"""One trained policy at other compute budgets: greedy decoding repriced, no retraining.

    python experiments/reprice.py RUN_DIR [RUN_DIR ...] --budgets 0.59 [0.62 ...] [--out FILE]

For each finished run and budget, greedy decoding's price per skipped layer is set by bisection
on the run's held-out rows (``skipjump/budget.py``, what ``agent.greedy_budget`` does at the end of
training; with the run's ``agent.greedy_fill: false`` only where greedy would spend more) and the
final evaluation is made again, as train.py makes it: greedy against full depth, static_matched,
cascade_matched and oracle_matched at greedy's compute on the test split.
The run directory is only read. Prints a Markdown table (``--out``: also written there), then the
gap closed's mean and spread per budget.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from policy_rows_gap import final_evaluation, markdown_table

from skipjump.budget import calibrate
from skipjump.provenance import header
from skipjump.runs import LOAD_ERRORS, load_trained


def rows_of(run_dir: str, budgets: list[float]) -> list[list]:
    """[run, budget, price, *final_evaluation] per budget (budget and price as text)."""
    trainer, _ = load_trained(run_dir)
    batch, first = trainer.config.trainer.eval_batch_size, trainer.first_decision()
    fill = trainer.config.agent.greedy_fill  # a run that caps its compute is repriced as a cap too
    rows = []
    for budget in budgets:
        priced = calibrate(trainer.model, trainer.task, trainer.policy_split, budget, first, batch, fill)
        price = f"{priced['price']:+.3f}" + ("" if priced["met"] else " (over budget)")
        rows.append([run_dir, f"{budget:.2f}", price, *final_evaluation(trainer, trainer.task)])
    return rows


def budget_value(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"a budget is a compute fraction in (0, 1], got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--budgets", nargs="+", type=budget_value, required=True)
    parser.add_argument("--out", help="also write the report here (Markdown)")
    args = parser.parse_args(argv)
    try:
        rows = [row for run_dir in args.run_dirs for row in rows_of(run_dir, args.budgets)]
    except LOAD_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    lines = [header(), "", *markdown_table(["run", "budget", "price"], rows)]
    for budget in args.budgets:
        gaps = [row[-1] for row in rows if row[1] == f"{budget:.2f}" and row[-1] is not None]
        if len(gaps) > 1:
            mean, spread = statistics.mean(gaps), statistics.stdev(gaps)
            lines.append(f"\nbudget {budget:.2f}: gap_closed mean {mean:.2f}, std {spread:.2f} over {len(gaps)} runs")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
