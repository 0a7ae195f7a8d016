"""K sampled paths per input on a trained run: each copy computed apart, or once per shared state.

    python experiments/bench_sampling.py RUN_DIR [--samples 4 8] [--repeats 30] [--threads N]
                                         [--out results/bench_sampling.json]

A policy step samples K paths for each input. Copies of an input that have made the same
decisions so far hold the same state, so the stack runs each layer once for them
(``Routing(samples=K)``) instead of on K repeated inputs (``x.repeat(K)``, how the trainer did
it before). Loads RUN_DIR's last checkpoint and times the policy step's forward pass both ways on
batches of the policy's training rows (train mode, no gradients, each pair drawn from the same
random state), interleaved, medians of --repeats rounds. Per K it prints the milliseconds, the
speedup, and ``rows``: the layer rows computed once per state over the layer rows routed (what
the sharing saves in layer work, the final MLP aside). Exit 2 with a one-line error on a bad run
directory.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import torch
from bench_speed import write_json

from skipjump.provenance import provenance
from skipjump.runs import LOAD_ERRORS, load_trained
from skipjump.stack import JumpTrace, Routing
from skipjump.tasks.base import JumpModel


def distinct_states(trace: JumpTrace, copies: int) -> int:
    """Layer rows run once per state: per layer, the distinct (input, decisions before it) among its rows."""
    batch = trace.actions.shape[0] // copies
    total = 0
    for i in range(trace.executed.shape[1]):
        rows = trace.executed[:, i].nonzero().flatten()
        states = torch.cat([(rows % batch)[:, None], trace.actions[rows, :i]], dim=1)
        total += int(torch.unique(states, dim=0).shape[0]) if rows.numel() else 0
    return total


@torch.no_grad()
def bench_copies(model: JumpModel, batches: list[torch.Tensor], copies: int, repeats: int) -> dict[str, float]:
    """Medians over interleaved rounds of the sampled forward pass, apart and shared."""
    times: dict[str, list[float]] = {"apart": [], "shared": []}
    routed = computed = 0
    for round_ in range(repeats + 2):  # two warm-up rounds
        inputs = batches[round_ % len(batches)]
        for name in times:
            torch.manual_seed(round_)  # both ways draw the same paths
            start = time.perf_counter()
            if name == "apart":
                _, trace = model(inputs.repeat(copies, *([1] * (inputs.dim() - 1))), Routing("sample"))
            else:
                _, trace = model(inputs, Routing("sample", samples=copies))
            if round_ >= 2:
                times[name].append(time.perf_counter() - start)
        routed += int(trace.executed.sum())
        computed += distinct_states(trace, copies)
    apart, shared = (statistics.median(times[name]) for name in ("apart", "shared"))
    return {
        "samples": copies,
        "apart_ms": 1000 * apart,
        "shared_ms": 1000 * shared,
        "speedup": apart / shared,
        "rows": computed / routed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--samples", type=int, nargs="+", default=[4, 8], help="paths per input (K), each >= 2")
    parser.add_argument("--repeats", type=int, default=30, help="interleaved rounds per K")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    parser.add_argument("--out", metavar="FILE", help="also write the JSON result, with how it was made, to FILE")
    args = parser.parse_args(argv)
    if args.repeats < 1 or min(args.samples) < 2:
        parser.error(f"--repeats must be >= 1 and every --samples >= 2, got {args.repeats} and {args.samples}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        trainer, _ = load_trained(args.run_dir)
    except LOAD_ERRORS as error:
        print(f"bench_sampling.py: {error}", file=sys.stderr)
        return 2

    task, model = trainer.task, trainer.model.train()  # sampling, as in a policy step
    if task.generated:
        batches = [task.draw(trainer.config.trainer.batch_size, step).inputs for step in range(8)]
    else:
        batches = [task.train.inputs[trainer.schedule.next_rows("policy")] for _ in range(8)]
    rows = [bench_copies(model, batches, k, args.repeats) for k in args.samples]
    result: dict[str, Any] = {
        **provenance(),
        "run_dir": str(args.run_dir),
        "batch_size": len(batches[0]),
        "repeats": args.repeats,
        "results": rows,
    }
    print(
        f"{args.run_dir}: batch {result['batch_size']} inputs, {result['threads']} threads, "
        f"median of {args.repeats}; rows = layer rows computed / routed"
    )
    print(f"{'K':>3} {'apart ms':>9} {'shared ms':>10} {'speedup':>8} {'rows':>6}")
    for r in rows:
        times = f"{r['apart_ms']:>9.2f} {r['shared_ms']:>10.2f} {r['speedup']:>7.2f}x"
        print(f"{r['samples']:>3} {times} {r['rows']:>6.2f}")
    if args.out:
        write_json(args.out, result)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
