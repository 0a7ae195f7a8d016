"""One trained policy at other compute budgets: greedy decoding repriced, no retraining.

    python experiments/reprice.py RUN_DIR [RUN_DIR ...] --budgets 0.59 [0.62 ...] [--out FILE]

For each finished run and budget, greedy decoding's price per skipped layer is set by bisection
on the run's held-out rows (``skipjump/budget.py``, what ``agent.greedy_budget`` does at the end of
training) and the final evaluation is made again, as train.py makes it: greedy against full
depth, static_matched, cascade_matched and oracle_matched at greedy's compute on the test split.
The run directory is only read. Prints a Markdown table (``--out``: also written there), then the
gap closed's mean and spread per budget.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from skipjump.budget import calibrate
from skipjump.evaluate import evaluate
from skipjump.provenance import header
from skipjump.runs import LOAD_ERRORS, load_trained

COLUMNS = ("greedy", "full", "static_matched", "cascade_matched", "oracle_matched")


def rows_of(run_dir: str, budgets: list[float]) -> list[list]:
    """[run, budget, price (text), accuracy per COLUMNS..., greedy compute, gap closed] per budget."""
    trainer, _ = load_trained(run_dir)
    model, config = trainer.model.eval(), trainer.config
    batch, first = config.trainer.eval_batch_size, trainer.first_decision()
    rows = []
    for budget in budgets:
        priced = calibrate(model, trainer.task, trainer.policy_split, budget, first, batch)
        price = f"{priced['price']:+.3f}" + ("" if priced["met"] else " (over budget)")
        results = evaluate(model, trainer.task, batch, config.seed, first, trainer.policy_split)
        greedy = results["greedy"].summary
        accuracy = [results[column].summary["accuracy"] for column in COLUMNS]
        rows.append([run_dir, budget, price, *accuracy, greedy["compute_fraction"], greedy["gap_closed"]])
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

    def percent(value: float) -> str:
        return f"{100 * value:.2f}%"

    lines = [header(), "", "| run | budget | price | " + " | ".join(COLUMNS) + " | greedy compute | gap_closed |"]
    lines.append("|---" * (len(COLUMNS) + 5) + "|")
    for run, budget, price, *accuracy, compute, gap in rows:
        gap_text = "n/a" if gap is None else f"{gap:.2f}"
        cells = [run, f"{budget:.2f}", price, *map(percent, accuracy), percent(compute), gap_text]
        lines.append("| " + " | ".join(cells) + " |")
    for budget in args.budgets:
        gaps = [row[-1] for row in rows if row[1] == budget and row[-1] is not None]
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
