"""The README's figures of a run's skip behaviour, written as PNG files.

    python experiments/figures.py RUN_DIR [--out results/figures]

Writes layer_rates.png (execution rate of each layer: greedy, random_matched, static_matched),
jumps_over_training.png (the share of each jump action after layer 0 and after a middle layer,
3 of 8, and of each depth, over training, from the TensorBoard event files) and
extreme_inputs.png (the test digits that ran the fewest and the most layers), and figures.txt
(layers run against accuracy, the digits shown, the command). The same plots as
notebooks/skip_behaviour.ipynb.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from matplotlib.figure import Figure

from skipjump import analysis, plots
from skipjump.provenance import provenance
from skipjump.runs import LOAD_ERRORS


def write_figures(run_dir: str | Path, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def save(figure: Figure, name: str) -> None:
        figure.savefig(out / name, dpi=90, bbox_inches="tight")
        written.append(out / name)

    fig = Figure(figsize=(8, 3.5))
    plots.layer_rates(fig.subplots(), analysis.layer_rates(run_dir))
    save(fig, "layer_rates.png")
    fig = Figure(figsize=(9, 6.5), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True)
    num_layers = len(analysis.summary(run_dir)["greedy"]["layer_rate"])
    for ax, tag in zip(axes, ("jumps/layer0", f"jumps/layer{(num_layers - 2) // 2}")):
        plots.histogram_over_training(ax, analysis.histograms(run_dir, tag), "skip")
        ax.set_title(f"jump actions sampled after {tag.split('/')[1]}", fontsize="small")
    plots.histogram_over_training(axes[2], analysis.histograms(run_dir, "jumps/depth"), "layers")
    axes[2].set_title("layers run per sampled path", fontsize="small")
    for ax in axes:
        ax.label_outer()
    save(fig, "jumps_over_training.png")
    extremes = analysis.extreme_inputs(run_dir, count=8)
    if extremes is not None:
        fig = Figure(figsize=(11, 4))
        top, bottom = fig.subfigures(2, 1)
        plots.digits(top, extremes[0], "test digits that ran the fewest layers")
        plots.digits(bottom, extremes[1], "test digits that ran the most layers")
        save(fig, "extreme_inputs.png")
    p = provenance()  # once: each call asks git for the code's commit
    lines = [f"{p['command']}  ({p['date']}, code {p['code']}, torch {p['torch']})", ""]
    lines.append("share of test inputs that ran each layer:")
    lines += [
        f"  {name:<15} " + " ".join(f"{r:.2f}" for r in rate) for name, rate in analysis.layer_rates(run_dir).items()
    ]
    lines.append("greedy on the test split: layers run -> inputs, accuracy")
    lines += [
        f"  {n}: {count} inputs, {accuracy:.2%}"
        for n, (count, accuracy) in analysis.accuracy_by_layers(run_dir).items()
    ]
    if extremes is not None:
        for examples, what in zip(extremes, ("fewest", "most")):
            shown = ", ".join(f"{e.label} ({e.layers})" for e in examples)
            lines.append(f"shown for the {what} layers (first in test order among ties), label (layers): {shown}")
    (out / "figures.txt").write_text("\n".join(lines) + "\n")
    written.append(out / "figures.txt")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--out", default="results/figures", help="folder for the PNG files")
    args = parser.parse_args(argv)
    try:
        for path in write_figures(args.run_dir, Path(args.out)):
            print(path)
    except LOAD_ERRORS as error:
        print(f"figures.py: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
