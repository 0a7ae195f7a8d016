"""Does a trained run's greedy policy save wall-clock time? Greedy against full depth, on the CPU.

    python experiments/bench_run.py RUN_DIR [--repeats 20] [--threads N] [--json] [--out results/bench_run.json]

Loads RUN_DIR's last checkpoint and times the whole model (embedding, stack, head) under
torch.inference_mode on the test split's inputs, with Routing("greedy") (policy calls included) and
Routing("full"), interleaved, medians of --repeats rounds, at three batch sizes:
  1    64 single inputs one after the other per timing (ms reported per input)
  64   the first 64 test inputs in one batch
  all  the whole test split in one batch

Per batch size: ms per pass, speedup = full / greedy, greedy's mean compute fraction on those
inputs (FLOPs over full depth, policy included), ideal = 1 / compute fraction and
efficiency = speedup / ideal (target >= 0.8). Then, at batch 1 and 64, where greedy's time
goes: its layers alone at the row counts it gives them, the same paths under fixed routing,
greedy itself, and full depth against its layers alone (``decompose``). Exit 2 with a one-line
error on a bad run directory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import torch
from bench_speed import write_json

from skipjump.provenance import provenance
from skipjump.runs import LOAD_ERRORS, load_run
from skipjump.stack import Routing
from skipjump.tasks.base import JumpModel

SINGLES = 64  # single inputs per batch-1 timing
TARGET = 0.8
ROUTINGS = {"full": Routing("full"), "greedy": Routing("greedy")}


@torch.inference_mode()
def bench_batches(model: JumpModel, batches: list[torch.Tensor], repeats: int) -> dict[str, float]:
    """Times and compute of greedy against full depth over ``batches`` (one timing runs them all)."""
    compute = torch.cat([model(inputs, ROUTINGS["greedy"])[1].compute_fraction for inputs in batches])
    for routing in ROUTINGS.values():  # warm-up
        model(batches[0], routing)
    times: dict[str, list[float]] = {name: [] for name in ROUTINGS}
    for _ in range(repeats):  # interleaved, so drift hits both alike
        for name, routing in ROUTINGS.items():
            start = time.perf_counter()
            for inputs in batches:
                model(inputs, routing)
            times[name].append((time.perf_counter() - start) / len(batches))
    full, greedy = (statistics.median(times[name]) for name in ("full", "greedy"))
    compute_fraction = float(compute.mean())
    ideal = 1.0 / compute_fraction
    return {
        "full_ms": 1000 * full,
        "greedy_ms": 1000 * greedy,
        "speedup": full / greedy,
        "compute_fraction": compute_fraction,
        "ideal": ideal,
        "efficiency": full / greedy / ideal,
    }


@torch.inference_mode()
def decompose(model: JumpModel, batches: list[torch.Tensor], repeats: int) -> dict[str, Any]:
    """Where greedy's time goes on ``batches`` (one timing runs them all; ms per batch), medians of
    interleaved rounds: the layers alone on the row counts greedy gives each (no routing), the same
    paths under fixed routing (routing without the policy), greedy (with it), and full depth with its
    layers alone; ``free_routing_efficiency``: what greedy would reach if routing cost nothing more
    than full depth's own (its layers plus full depth's time outside its layers)."""
    stack = model.stack
    traces = [model(inputs, ROUTINGS["greedy"])[1] for inputs in batches]
    rows = [trace.executed.sum(dim=0).tolist() for trace in traces]
    shape = model.embed(batches[0]).shape[1:]
    hidden = {n: torch.randn(n, *shape) for n in {n for r in rows for n in r} | {len(b) for b in batches}}
    fixed = [Routing("fixed", actions=trace.actions) for trace in traces]
    parts = {
        "layers_at_greedy_rows": lambda: [layer(hidden[n]) for r in rows for layer, n in zip(stack.layers, r) if n],
        "fixed_routing": lambda: [model(inputs, routing) for inputs, routing in zip(batches, fixed)],
        "greedy": lambda: [model(inputs, ROUTINGS["greedy"]) for inputs in batches],
        "layers_at_full_depth": lambda: [layer(hidden[len(b)]) for b in batches for layer in stack.layers],
        "full": lambda: [model(inputs, ROUTINGS["full"]) for inputs in batches],
    }
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(repeats):
        for name, run in parts.items():
            start = time.perf_counter()
            run()
            times[name].append(1000 * (time.perf_counter() - start) / len(batches))
    ms = {name: statistics.median(t) for name, t in times.items()}
    ideal = 1.0 / float(torch.cat([trace.compute_fraction for trace in traces]).mean())
    routing_full = ms["full"] - ms["layers_at_full_depth"]
    return {
        "rows_per_layer": [sum(column) for column in zip(*rows)],
        "ms": ms,
        "layers_only_efficiency": ms["layers_at_full_depth"] / ms["layers_at_greedy_rows"] / ideal,
        "free_routing_efficiency": ms["full"] / (ms["layers_at_greedy_rows"] + routing_full) / ideal,
        "routing_ms_greedy": ms["greedy"] - ms["layers_at_greedy_rows"],
        "routing_ms_full": routing_full,
    }


def bench_run(model: JumpModel, inputs: torch.Tensor, repeats: int) -> list[dict[str, Any]]:
    """One row per batch size: 1, 64 and the whole of ``inputs``."""
    settings = [
        ("1", 1, [inputs[i : i + 1] for i in range(min(SINGLES, len(inputs)))]),
        ("64", min(64, len(inputs)), [inputs[:64]]),
        ("all", len(inputs), [inputs]),
    ]
    return [
        {"batch": label, "batch_size": size, "inputs": sum(len(i) for i in b), **bench_batches(model, b, repeats)}
        for label, size, b in settings
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--repeats", type=int, default=20, help="interleaved rounds per batch size")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", metavar="FILE", help="also write the JSON result, with how it was made, to FILE")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    try:
        config, task, model = load_run(args.run_dir)
    except LOAD_ERRORS as error:
        print(f"bench_run.py: {error}", file=sys.stderr)
        return 2

    inputs = task.test.inputs
    rows = bench_run(model, inputs, args.repeats)
    singles = [inputs[i : i + 1] for i in range(min(SINGLES, len(inputs)))]
    parts = {"1": decompose(model, singles, args.repeats), "64": decompose(model, [inputs[:64]], args.repeats)}
    m = config.model
    result = {
        **provenance(),
        "run_dir": str(args.run_dir),
        "model": {"dims": m.dims, "num_layers": m.num_layers, "max_jump": m.max_jump, "policy": m.policy_inputs},
        "test_inputs": len(inputs),
        "repeats": args.repeats,
        "batches": rows,
        "parts": parts,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.run_dir}: {m.num_layers} layers, dims {m.dims}, max_jump {m.max_jump}, {m.policy_inputs} policy; "
            f"{len(inputs)} test inputs; {result['threads']} threads; median of {args.repeats}"
        )
        print(
            f"{'batch':>5} {'full ms':>9} {'greedy ms':>10} {'speedup':>8} {'compute':>8} {'ideal':>6} "
            f"{'efficiency':>10}"
        )
        for r in rows:
            print(
                f"{r['batch_size']:>5} {r['full_ms']:>9.2f} {r['greedy_ms']:>10.2f} {r['speedup']:>7.2f}x "
                f"{r['compute_fraction']:>8.3f} {r['ideal']:>5.2f}x {r['efficiency']:>10.2f}"
            )
        print(f"target: efficiency >= {TARGET} (batch 1: ms per input, {SINGLES} inputs one by one per timing)")
        for label, part in parts.items():
            print(
                f"batch {label}, where the time goes (ms per batch): rows per layer under greedy "
                f"{part['rows_per_layer']}"
            )
            print("  " + ", ".join(f"{name} {value:.2f}" for name, value in part["ms"].items()))
            print(
                f"  routing (pass minus its layers): greedy {part['routing_ms_greedy']:.2f}, "
                f"full {part['routing_ms_full']:.2f}; layers alone would reach {part['layers_only_efficiency']:.2f} "
                f"of ideal, greedy with routing as cheap as full depth's {part['free_routing_efficiency']:.2f}"
            )
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
