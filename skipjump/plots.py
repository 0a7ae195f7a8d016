"""Plots of skip behaviour on matplotlib Axes: shared by the notebook, experiments/figures.py and
the run log's TensorBoard figures. Each takes the tables of :mod:`skipjump.analysis`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

if TYPE_CHECKING:  # analysis reads runs, whose trainer logs through this module
    from skipjump.analysis import Example, Groups, Histograms


def layer_rates(ax: Axes, rates: dict[str, np.ndarray]) -> None:
    """Grouped bars: the share of inputs that ran each layer, per policy."""
    width = 0.8 / len(rates)
    for k, (name, rate) in enumerate(rates.items()):
        ax.bar(np.arange(len(rate)) + (k - (len(rates) - 1) / 2) * width, rate, width, label=name)
    ax.set(xlabel="layer", ylabel="share of test inputs that ran it", ylim=(0, 1.05))
    ax.set_xticks(np.arange(len(next(iter(rates.values())))))
    ax.legend(fontsize="small")


def layers_by_group(ax: Axes, groups: Groups) -> None:
    """Mean layers run per group (class or difficulty), with the spread (one standard deviation)."""
    keys = list(groups.layers)
    means = [groups.layers[k].mean() for k in keys]
    spread = [groups.layers[k].std() for k in keys]
    ax.bar([str(k) for k in keys], means, yerr=spread, capsize=3, color="tab:blue")
    ax.set(xlabel=groups.by, ylabel="layers run (mean ± sd)")


def accuracy_by_layers(ax: Axes, table: dict[int, tuple[int, float]]) -> None:
    """Accuracy of the inputs that ran n layers, with how many there were."""
    layers = list(table)
    ax.bar([str(n) for n in layers], [table[n][1] for n in layers], color="tab:green")
    for i, n in enumerate(layers):
        ax.annotate(f"n={table[n][0]}", (i, table[n][1]), ha="center", va="bottom", fontsize="small")
    ax.set(xlabel="layers run", ylabel="accuracy", ylim=(0, 1.1))


def path_shares(ax: Axes, shares: list[tuple[tuple, float]], distinct: int) -> None:
    """Horizontal bars: the most frequent paths and their share."""
    labels = ["-".join(map(str, path)) for path, _ in shares][::-1]
    ax.barh(labels, [share for _, share in shares][::-1], color="tab:purple")
    ax.set(xlabel="share of test inputs", ylabel="path (layers run)", title=f"{distinct} distinct paths")


def histogram_over_training(ax: Axes, hist: Histograms, label: str) -> None:
    """Stacked shares of each discrete value (one band per jump action or depth) against the step."""
    ax.stackplot(hist.steps, hist.shares().T, labels=[f"{label} {v}" for v in hist.values])
    ax.set(xlabel="step", ylabel="share", ylim=(0, 1), xlim=(hist.steps.min(), hist.steps.max()))
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))


def digits(fig: Figure, examples: list[Example], title: str) -> None:
    """A row of digit images, each titled with its label, layers run and whether it was right."""
    axes = fig.subplots(1, len(examples))
    for ax, e in zip(np.atleast_1d(axes), examples):
        ax.imshow(e.image, cmap="gray_r")
        ax.set_title(f"{e.label}: {e.layers} layers{'' if e.correct else ' (wrong)'}", fontsize="small")
        ax.axis("off")
    fig.suptitle(title)


def depth_bars(values: np.ndarray, num_layers: int, title: str) -> Figure:
    """A bar chart of layers run per input (for TensorBoard's image tab)."""
    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    counts = np.bincount(values, minlength=num_layers + 1)[1:]
    ax.bar(np.arange(1, num_layers + 1), counts / max(1, len(values)), color="tab:blue")
    ax.set(xlabel="layers run", ylabel="share of inputs", title=title, xticks=np.arange(1, num_layers + 1))
    fig.tight_layout()
    return fig
