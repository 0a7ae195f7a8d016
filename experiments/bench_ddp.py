"""Training samples per second on 1 and 2 ranks, side by side: the demo's steps through torchrun.

    python experiments/bench_ddp.py [--steps 400] [--repeats 2] [--out results/bench_ddp.json] [key=value ...]

Every configuration trains the demo config (skipjump/configs/digits.yaml) for ``--steps`` steps
under torchrun, half of them supervised warm-up, then supervised and policy steps alternating,
with no periodic evaluation; the rate is the run's own (charts/steps_per_second at its last log,
training only). The cores are shared out: 1 rank x 2 threads against 2 ranks x 1 thread on a
2-core machine (``--cores``). Two batch settings: the same global batch (64 = 1 x 64 = 2 x 32,
strong scaling) and the same batch per rank (64 rows each, weak scaling). Samples per second =
global batch x steps per second. Configurations are interleaved over ``--repeats`` rounds;
medians are reported. ``key=value`` overrides go to every run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_speed import write_json

from skipjump.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "skipjump" / "configs" / "digits.yaml")


def steps_per_second(ranks: int, batch: int, steps: int, cores: int, overrides: list[str]) -> float:
    """Train one run under torchrun and return its training steps per second."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
        command += [str(ROOT / "experiments" / "train.py"), "--config", CONFIG, "--run-dir", str(run)]
        command += [f"trainer.{key}={value}" for key, value in (("steps", steps), ("batch_size", batch))]
        command += [f"trainer.warmup_steps={steps // 2}", "trainer.eval_every=0", f"trainer.log_every={steps}"]
        command += overrides
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // ranks))}
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"error: {ranks} rank(s) at batch {batch} failed: {done.stderr.strip()[-400:]}")
        logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return next(line["charts/steps_per_second"] for line in reversed(logged) if "charts/steps_per_second" in line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="threads shared out among the ranks")
    parser.add_argument("--global-batch", type=int, default=64)
    parser.add_argument("--out", help="write the figures as JSON (and the table as .txt beside it)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value config overrides for every run")
    args = parser.parse_args(argv)
    if args.steps < 2 or args.repeats < 1 or args.global_batch < 2 or args.global_batch % 2:
        parser.error("--steps >= 2, --repeats >= 1 and an even --global-batch >= 2, please")

    settings = [  # (name, ranks, rows per rank)
        ("1 rank", 1, args.global_batch),
        ("2 ranks, same global batch", 2, args.global_batch // 2),
        ("2 ranks, same batch per rank", 2, args.global_batch),
    ]
    rates: dict[str, list[float]] = {name: [] for name, _, _ in settings}
    for round_ in range(args.repeats):
        for name, ranks, batch in settings:
            rates[name].append(steps_per_second(ranks, batch, args.steps, args.cores, args.overrides))
            print(f"round {round_ + 1}: {name}: {rates[name][-1]:.1f} steps/s", file=sys.stderr, flush=True)

    rows = []
    for name, ranks, batch in settings:
        rate = statistics.median(rates[name])
        rows.append(
            {
                "setting": name,
                "ranks": ranks,
                "batch_per_rank": batch,
                "global_batch": ranks * batch,
                "threads_per_rank": max(1, args.cores // ranks),
                "steps_per_second": rate,
                "samples_per_second": rate * ranks * batch,
                "rounds": rates[name],
            }
        )
    base = rows[0]["samples_per_second"]
    lines = [f"{'setting':30} {'ranks':>5} {'batch/rank':>10} {'steps/s':>8} {'samples/s':>10} {'vs 1 rank':>9}"]
    for row in rows:
        row["speedup"] = row["samples_per_second"] / base
        lines.append(
            f"{row['setting']:30} {row['ranks']:5d} {row['batch_per_rank']:10d} {row['steps_per_second']:8.1f}"
            f" {row['samples_per_second']:10.0f} {row['speedup']:8.2f}x"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        info = provenance() | {"threads": f"{args.cores} cores shared out: OMP_NUM_THREADS = cores / ranks"}
        write_json(args.out, info | {"steps": args.steps, "repeats": args.repeats, "settings": rows})
        Path(args.out).with_suffix(".txt").write_text(
            f"# {info['command']}\n# torch {info['torch']}, {info['threads']}, {info['date']}\n{table}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
