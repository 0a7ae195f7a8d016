"""A short check on a GPU: training in float32 and bf16, then the speed benchmark; figures printed.

    python experiments/gpu_smoke.py [--steps 300] [--device cuda] [--out results/gpu_smoke.txt]

1. Trains the demo config (skipjump/configs/digits.yaml) for ``--steps`` steps on the device, once
   in float32 and once under bf16 autocast (half supervised warm-up, then supervised and policy
   steps alternating), and prints steps per second and the greedy and full-depth test accuracy.
   The demo's model is tiny: on a GPU its steps are bound by kernel launches and the routing
   loop's host syncs, not by arithmetic.
2. Times the jump stack forward (bench_speed's plain / full / skip / masked variants) on a
   12-layer, 256-wide stack at batch 64 and 512, where skipping half of the layer executions has
   work to save.

``--device cpu`` runs the same on the CPU (how the tests check this script).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from bench_speed import make_case, ratios, time_variants

from skipjump.config import load
from skipjump.distributed import Ranks
from skipjump.provenance import header
from skipjump.trainer import build

CONFIG = Path(__file__).resolve().parents[1] / "skipjump" / "configs" / "digits.yaml"


def train(device: torch.device, precision: str, steps: int) -> str:
    overrides = [f"trainer.steps={steps}", f"trainer.warmup_steps={steps // 2}", "trainer.eval_every=0"]
    config = load(CONFIG, [*overrides, f"trainer.precision={precision}"])
    trainer = build(config, ranks=Ranks(device=device))
    trainer.train()  # the first steps include the kernels' warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    trainer.train(steps + steps // 2)  # timed: a third more steps, supervised and policy alternating
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = (steps // 2) / (time.perf_counter() - started)
    greedy, full = (trainer.evaluate_one(name).summary for name in ("greedy", "full"))
    return (
        f"train {precision:8} {rate:7.1f} steps/s   greedy {greedy['accuracy']:.2%} at "
        f"{greedy['compute_fraction']:.1%} compute, full depth {full['accuracy']:.2%} (after {trainer.step} steps)"
    )


def speed(device: torch.device, batch: int, repeats: int) -> str:
    case = make_case(layers=12, batch=batch, seq=64, dims=256, device=str(device))
    median, _ = time_variants(case, ["plain", "full", "skip", "masked"], repeats)
    r = ratios(case, median)
    ms = "  ".join(f"{name} {1000 * t:.2f} ms" for name, t in median.items())
    return (
        f"stack batch {batch:4}: {ms}; routing overhead {r['routing_overhead']:+.1%}, skip {r['skip_speedup']:.2f}x"
        f" of ideal {r['ideal_speedup']:.2f}x (efficiency {r['skip_efficiency']:.2f}),"
        f" masked {r['masked_speedup']:.2f}x"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--repeats", type=int, default=20, help="benchmark rounds")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--out", help="also write the printed lines to this file")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            f"error: no CUDA device visible to torch {torch.__version__} (a CPU build?); see the README",
            file=sys.stderr,
        )
        return 2
    if args.steps < 2:
        parser.error("--steps must be >= 2")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [header(), f"# device: {name}"]
    for line in (
        *(train(device, precision, args.steps) for precision in ("float32", "bf16")),
        *(speed(device, batch, args.repeats) for batch in args.batches),
    ):
        print(line, flush=True)
        lines.append(line)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
