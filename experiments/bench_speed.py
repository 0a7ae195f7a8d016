"""Does skipping save wall-clock time? Side by side, in one run, on the CPU.

    python experiments/bench_speed.py [--layers 6] [--batch 64] [--repeats 10] [--backward] [--json] [--out FILE]
    python experiments/bench_speed.py --sweep [--seq 64] [--dims 256] [--json] [--out results/sweep.json]

(--threads N sets torch.set_num_threads for either.)

Variants (default: batch 64, 6 attention layers, dims 256, seq 64):
  plain   a loop over the same layers and final MLP, no routing at all
  full    the jump stack in "full" mode (never jumps): plain + routing overhead
  skip    a fixed per-sample pattern that skips half of the layer executions, real skipping
  masked  the same pattern computing the same outputs, but every layer (and every jump mix) runs
          on every row and is then masked (BlockDrop/SkipNet)

The skip pattern follows the depth: half of the samples run layer 0, the even layers in
[2, L - 3] and layer L - 1, the other half layer 0, the odd layers in [3, L - 3] and layer L - 1,
so L of the 2L layer executions of a pair of samples run (exactly half; needs max_jump >= 2).

Ratios: overhead = full / plain - 1; speedup = full / variant; efficiency = speedup / ideal,
where ideal = 1 / executed compute fraction (the final MLP always runs, so ideal < 2).

--sweep measures plain, full and skip (no masked) for depth 6 / 12 / 24 x batch 8 / 64 / 256 and
prints routing overhead and skip efficiency per cell. Each cell repeats until it has spent about
--cell-seconds (at least 3 and at most --repeats interleaved rounds), so the sweep takes about
3 minutes on 2 CPU threads at the defaults. --out FILE writes the JSON result together with the
command line, torch.get_num_threads(), torch.__version__ and the date.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from skipjump import JumpStack, Routing, StackConfig, path_to_actions
from skipjump.provenance import provenance

SWEEP_LAYERS = (6, 12, 24)
SWEEP_BATCHES = (8, 64, 256)


def write_json(path: str | Path, result: dict[str, Any]) -> None:
    """Write ``result`` to ``path`` (parent folders created), indented."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def skip_paths(num_layers: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Two complementary paths that together run ``num_layers`` of 2 * ``num_layers`` layer executions.

    Both run layers 0 and L - 1; the interior layers 2..L - 3 are split between them, even and odd
    (layers 1 and L - 2 run on neither). Every jump skips at most 2 layers once L >= 6.
    """
    if num_layers < 4:
        raise ValueError(f"the skip pattern needs at least 4 layers, got {num_layers}")
    last = num_layers - 1
    inner = range(2, last - 1)
    return (0, *[i for i in inner if i % 2 == 0], last), (0, *[i for i in inner if i % 2 == 1], last)


def skip_actions(config: StackConfig, batch: int) -> torch.Tensor:
    """(batch, L - 1) fixed actions: even rows take the first of :func:`skip_paths`, odd rows the second."""
    paths = [path_to_actions(p, config.num_layers, config.max_jump) for p in skip_paths(config.num_layers)]
    return torch.stack([paths[b % 2] for b in range(batch)])


def plain_forward(stack: JumpStack, x: torch.Tensor) -> torch.Tensor:
    for layer in stack.layers:
        x = layer(x)
    return x + stack.final_gate(x) * stack.final_mlp(stack.final_norm(x))


def masked_forward(stack: JumpStack, x: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """What ``stack(x, routing=Routing("fixed", actions=actions))`` computes, the compute-then-mask way.

    Every layer (and, with jump_mix, the working memory and the jump mix) runs on every row; a row
    keeps the result only where its path runs that layer.
    """
    b, num_layers = x.shape[0], stack.num_layers
    position = torch.zeros(b, dtype=torch.long, device=x.device)
    h, work_mem = x, stack.work_memory.expand(b, 1, -1)
    for i, layer in enumerate(stack.layers):
        runs = position == i
        hi = layer(h)
        if i < num_layers - 1:
            landing = (i + 1 + actions[:, i].clamp(min=0)).clamp(max=num_layers - 1)
            skipped = landing - (i + 1)
            position = torch.where(runs, landing, position)
            if stack.config.jump_mix:
                memory = hi.mean(dim=1, keepdim=True)
                g = stack.work_memory_gate(memory)
                wm = g * work_mem + (1 - g) * memory
                work_mem = torch.where(runs[:, None, None], wm, work_mem)
                jumped = (skipped > 0).to(hi.dtype)[:, None, None]
                w = stack.jump_weights[(skipped - 1).clamp(min=0)][:, None, None]
                hi = hi + jumped * (w * x + (1 - w) * wm)
        h = torch.where(runs[:, None, None], hi, h)
    return h + stack.final_gate(h) * stack.final_mlp(stack.final_norm(h))


@dataclass
class Case:
    """One benchmark setting: a seeded stack, its input and the skip pattern."""

    stack: JumpStack
    x: torch.Tensor
    actions: torch.Tensor  # (B, L - 1) the skip pattern
    execution_fraction: float  # layer executions of the skip pattern over B * L
    compute_fraction: float  # its FLOPs over full-depth FLOPs (the final MLP always runs)

    def variants(self) -> dict[str, Callable[[], torch.Tensor]]:
        """Each variant as a function returning the stack's output."""
        stack, x, skip = self.stack, self.x, Routing("fixed", actions=self.actions)
        return {
            "plain": lambda: plain_forward(stack, x),
            "full": lambda: stack(x, routing="full")[0],
            "skip": lambda: stack(x, routing=skip)[0],
            "masked": lambda: masked_forward(stack, x, self.actions),
        }


def make_case(layers: int, batch: int, seq: int, dims: int, seed: int = 0, device: str = "cpu") -> Case:
    torch.manual_seed(seed)
    config = StackConfig(dims=dims, num_layers=layers, heads=8 if dims % 8 == 0 else 1, attention=True)
    stack = JumpStack(config).to(device)
    x = torch.randn(batch, seq, dims, device=device)
    actions = skip_actions(config, batch).to(device)
    with torch.no_grad():
        _, trace = stack(x, routing=Routing("fixed", actions=actions))
    return Case(stack, x, actions, float(trace.executed.float().mean()), float(trace.compute_fraction.mean()))


def time_variants(
    case: Case, names: list[str], repeats: int, backward: bool = False, seconds: float | None = None
) -> tuple[dict[str, float], int]:
    """Median seconds per pass of each variant over interleaved rounds, and the number of rounds.

    With ``seconds``, about that much time is spent (rounds estimated from the warm-up round; at least
    3, at most ``repeats``).
    """
    variants = case.variants()

    cuda = case.x.is_cuda

    def run(name: str) -> float:
        if cuda:  # a GPU runs asynchronously: time finished work only
            torch.cuda.synchronize()
        start = time.perf_counter()
        if backward:
            case.stack.zero_grad(set_to_none=True)
            variants[name]().square().mean().backward()
        else:
            with torch.no_grad():
                variants[name]()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    warmup = sum(run(name) for name in names)
    rounds = repeats if seconds is None else min(repeats, max(3, int(seconds / max(warmup, 1e-9))))
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):  # interleaved, so drift hits every variant alike
        for name in names:
            times[name].append(run(name))
    return {name: statistics.median(t) for name, t in times.items()}, rounds


def ratios(case: Case, median: dict[str, float]) -> dict[str, float]:
    ideal = 1.0 / case.compute_fraction
    result = {
        "routing_overhead": median["full"] / median["plain"] - 1.0,
        "ideal_speedup": ideal,
        "skip_speedup": median["full"] / median["skip"],
        "skip_efficiency": median["full"] / median["skip"] / ideal,
    }
    if "masked" in median:
        result["masked_speedup"] = median["full"] / median["masked"]
    return result


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    cells = []
    for layers in SWEEP_LAYERS:
        for batch in SWEEP_BATCHES:
            case = make_case(layers, batch, args.seq, args.dims)
            median, rounds = time_variants(case, ["plain", "full", "skip"], args.repeats, seconds=args.cell_seconds)
            cells.append(
                {
                    "layers": layers,
                    "batch": batch,
                    "repeats": rounds,
                    "layer_execution_fraction": case.execution_fraction,
                    "compute_fraction": case.compute_fraction,
                    "seconds": median,
                    **ratios(case, median),
                }
            )
            if not args.json:
                print_cell(cells[-1], header=len(cells) == 1)
    return {"pass": "forward", "seq": args.seq, "dims": args.dims, "cells": cells}


def print_cell(cell: dict[str, Any], header: bool) -> None:
    if header:
        print(
            f"{'layers':>6} {'batch':>5} {'plain ms':>9} {'full ms':>9} {'skip ms':>9} {'overhead':>9} "
            f"{'speedup':>8} {'ideal':>6} {'efficiency':>10} {'repeats':>7}"
        )
    s = cell["seconds"]
    print(
        f"{cell['layers']:>6} {cell['batch']:>5} {1000 * s['plain']:>9.1f} {1000 * s['full']:>9.1f} "
        f"{1000 * s['skip']:>9.1f} {cell['routing_overhead']:>+9.1%} {cell['skip_speedup']:>7.2f}x "
        f"{cell['ideal_speedup']:>5.2f}x {cell['skip_efficiency']:>10.2f} {cell['repeats']:>7d}",
        flush=True,
    )


def single(args: argparse.Namespace) -> dict[str, Any]:
    case = make_case(args.layers, args.batch, args.seq, args.dims)
    names = ["plain", "full", "skip", "masked"]
    median, _ = time_variants(case, names, args.repeats, backward=args.backward)
    result = {
        "pass": "forward+backward" if args.backward else "forward",
        "layers": args.layers,
        "batch": args.batch,
        "seq": args.seq,
        "dims": args.dims,
        "repeats": args.repeats,
        "layer_execution_fraction": case.execution_fraction,
        "compute_fraction": case.compute_fraction,
        "seconds": median,
        **ratios(case, median),
    }
    if args.json:
        return result
    print(
        f"{result['pass']}, batch {args.batch}, seq {args.seq}, dims {args.dims}, {args.layers} attention layers, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print(
        f"skip pattern runs {case.execution_fraction:.0%} of layer executions = "
        f"{case.compute_fraction:.1%} of full FLOPs"
    )
    print(f"{'variant':<8} {'ms':>9} {'speedup vs full':>16}")
    for name in names:
        print(f"{name:<8} {1000 * median[name]:>9.1f} {median['full'] / median[name]:>16.2f}")
    print(f"routing overhead (full vs plain): {result['routing_overhead']:+.1%}   (target <= +5%)")
    print(
        f"real skipping: {result['skip_speedup']:.2f}x of ideal {result['ideal_speedup']:.2f}x = "
        f"{result['skip_efficiency']:.2f} of ideal   (target >= 0.90)"
    )
    print(f"compute-then-mask: {result['masked_speedup']:.2f}x   (saves nothing)")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 10; sweep: at most 30)")
    parser.add_argument("--backward", action="store_true", help="time forward + backward instead of forward")
    parser.add_argument("--sweep", action="store_true", help="depth 6/12/24 x batch 8/64/256, forward only")
    parser.add_argument("--cell-seconds", type=float, default=12.0, help="sweep: time to spend per cell")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the ratios")
    parser.add_argument("--out", metavar="FILE", help="also write the JSON result, with how it was made, to FILE")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.repeats is None:
        args.repeats = 30 if args.sweep else 10
    if args.sweep and args.backward:
        parser.error("--sweep times the forward pass only")
    if args.layers < 4 and not args.sweep:
        parser.error(f"--layers must be at least 4 for the skip pattern, got {args.layers}")

    result = {**provenance(), **(sweep(args) if args.sweep else single(args))}
    if args.json:
        print(json.dumps(result))
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
