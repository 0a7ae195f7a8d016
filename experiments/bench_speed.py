"""Does skipping save wall-clock time? Side by side, in one run, on the CPU.

    python experiments/bench_speed.py [--repeats 10] [--backward] [--json]

Variants (batch 64, 6 attention layers, dims 256, seq 64):
  plain   a loop over the same layers and final MLP, no routing at all
  full    the jump stack in "full" mode (never jumps): plain + routing overhead
  skip    a fixed per-sample pattern that skips half of the layer executions, real skipping
  masked  the same pattern, every layer computed on every row and then masked (BlockDrop/SkipNet)

Ratios: overhead = full / plain - 1; speedup = full / variant; efficiency = speedup / ideal,
where ideal = 1 / executed compute fraction (the final MLP always runs, so ideal < 2).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from skipjump import JumpStack, Routing, StackConfig, path_to_actions


def plain_forward(stack: JumpStack, x: torch.Tensor) -> torch.Tensor:
    for layer in stack.layers:
        x = layer(x)
    return x + stack.final_gate(x) * stack.final_mlp(stack.final_norm(x))


def masked_forward(stack: JumpStack, x: torch.Tensor, executed: torch.Tensor) -> torch.Tensor:
    """Compute every layer for every row, keep the result only where the pattern runs it."""
    for i, layer in enumerate(stack.layers):
        x = torch.where(executed[:, i, None, None], layer(x), x)
    return x + stack.final_gate(x) * stack.final_mlp(stack.final_norm(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--backward", action="store_true", help="time forward + backward instead of forward")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the ratios")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = StackConfig(dims=args.dims, num_layers=args.layers, heads=8, attention=True)
    stack = JumpStack(config)
    x = torch.randn(args.batch, args.seq, args.dims)
    last = args.layers - 1
    # Half the samples run (0, 2, last), half (0, 3, last): half of all layer executions skipped.
    paths = [(0, 2, last), (0, 3, last)]
    actions = torch.stack([path_to_actions(paths[b % 2], args.layers, config.max_jump) for b in range(args.batch)])
    skip = Routing("fixed", actions=actions)
    _, trace = stack(x, routing=skip)
    executed, compute_fraction = trace.executed, float(trace.compute_fraction.mean())
    execution_fraction = float(executed.float().mean())

    variants = {
        "plain": lambda: plain_forward(stack, x),
        "full": lambda: stack(x, routing="full"),
        "skip": lambda: stack(x, routing=skip),
        "masked": lambda: masked_forward(stack, x, executed),
    }

    def run(fn):
        if args.backward:
            stack.zero_grad(set_to_none=True)
            fn().square().mean().backward()
        else:
            with torch.no_grad():
                fn()

    for fn in variants.values():  # warm-up
        run(fn)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):  # interleaved, so drift hits every variant alike
        for name, fn in variants.items():
            start = time.perf_counter()
            run(fn)
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}

    ideal = 1.0 / compute_fraction
    result = {
        "threads": torch.get_num_threads(),
        "pass": "forward+backward" if args.backward else "forward",
        "layer_execution_fraction": execution_fraction,
        "compute_fraction": compute_fraction,
        "seconds": median,
        "routing_overhead": median["full"] / median["plain"] - 1.0,
        "ideal_speedup": ideal,
        "skip_speedup": median["full"] / median["skip"],
        "skip_efficiency": median["full"] / median["skip"] / ideal,
        "masked_speedup": median["full"] / median["masked"],
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['pass']}, batch {args.batch}, seq {args.seq}, dims {args.dims}, {args.layers} attention layers, "
        f"{result['threads']} threads, median of {args.repeats}"
    )
    print(f"skip pattern runs {execution_fraction:.0%} of layer executions = {compute_fraction:.1%} of full FLOPs")
    print(f"{'variant':<8} {'ms':>9} {'speedup vs full':>16}")
    for name in variants:
        print(f"{name:<8} {1000 * median[name]:>9.1f} {median['full'] / median[name]:>16.2f}")
    print(f"routing overhead (full vs plain): {result['routing_overhead']:+.1%}   (target <= +5%)")
    print(
        f"real skipping: {result['skip_speedup']:.2f}x of ideal {ideal:.2f}x = "
        f"{result['skip_efficiency']:.2f} of ideal   (target >= 0.90)"
    )
    print(f"compute-then-mask: {result['masked_speedup']:.2f}x   (saves nothing)")


if __name__ == "__main__":
    main()
