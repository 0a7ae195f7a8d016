"""Run one config over several seeds and write the result file the README quotes.

    python experiments/seeds.py --out results/demo_seeds.json [--config CONFIG] [--seeds 0 1 2]
                                [--jobs 1] [--nproc 1] [key=value ...]

Each seed is one ``experiments/train.py`` run in a subprocess, its run directory under
``--runs`` (default runs/seeds). ``--jobs 2`` runs two at a time with OMP_NUM_THREADS=1 each
(on 2 cores, two 2-thread runs side by side are far slower); ``--jobs 1`` keeps torch's default
threads, as ``make demo`` does, so training times compare with it. ``--nproc N`` trains each
seed data-parallel on N ranks with torchrun (OMP_NUM_THREADS=1 per rank). Writes OUT (JSON: command,
threads, torch version, date, each seed's summary and training time, mean and spread) and the
same table as Markdown beside it (OUT with .md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from skipjump.provenance import provenance
from skipjump.runs import read_config

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
POLICIES = (
    "greedy",
    "full",
    "random_matched",
    "static_matched",
    "cascade_matched",
    "difficulty_matched",
    "oracle_matched",
)


def run_seed(
    config: str, seed: int, run_dir: Path, overrides: list[str], threads: int | None, nproc: int = 1
) -> subprocess.Popen:
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    launcher = [sys.executable] if nproc == 1 else [*TORCHRUN, f"--nproc_per_node={nproc}"]
    command = [*launcher, str(ROOT / "experiments/train.py"), "--config", config, "--run-dir", str(run_dir)]
    return subprocess.Popen(
        [*command, f"seed={seed}", *overrides], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def seed_row(run_dir: Path, stdout: str = "") -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    timing = re.search(r"(\d+) steps in (\d+)s", stdout)
    row = {f"{name}_accuracy": summary[name]["accuracy"] for name in POLICIES if name in summary}
    row["greedy_compute"] = summary["greedy"]["compute_fraction"]
    row["greedy_paths"] = summary["greedy"]["unique_paths"]
    row["gap_closed"] = summary["greedy"].get("gap_closed")
    row["static_path"] = summary["static_matched"]["path"]
    if "price" in summary["greedy"]:  # agent.greedy_budget: greedy decoding's price per skipped layer
        row["greedy_price"] = summary["greedy"]["price"]["price"]
    if "difficulty_matched" in summary:  # what one path per k takes of the headroom
        row["difficulty_gap_closed"] = summary["difficulty_matched"]["gap_closed"]
    if "spearman_layers_difficulty" in summary["greedy"]:  # tasks with a known difficulty (k-hop)
        row["spearman_k"] = summary["greedy"]["spearman_layers_difficulty"]
        row["spearman_fewest_k"] = summary["greedy"]["spearman_fewest_difficulty"]
        row["needed_layers"] = [r.get("needed_layers") for r in summary["greedy"]["by_difficulty"].values()]
    row["train_seconds"] = int(timing.group(2)) if timing else training_seconds(run_dir)
    row["run_dir"] = str(run_dir)
    return row


def training_seconds(run_dir: Path) -> int | None:
    """steps / the mean rate the run logged last (charts/steps_per_second counts from the run's start)."""
    for line in reversed((run_dir / "metrics.jsonl").read_text().splitlines()):
        logged = json.loads(line)
        if "charts/steps_per_second" in logged:
            return round(logged["step"] / logged["charts/steps_per_second"])
    return None


def spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def markdown(result: dict) -> str:
    rows = result["seeds"].values()
    columns = [f"{name}_accuracy" for name in POLICIES if any(f"{name}_accuracy" in row for row in rows)]
    columns += ["greedy_compute", "greedy_paths", "gap_closed", "train_seconds"]
    for optional in ("difficulty_gap_closed", "spearman_k", "greedy_price"):  # k-hop; agent.greedy_budget
        if any(optional in row for row in rows):
            columns.insert(-1, optional)
    header = ["seed", *(c.replace("_accuracy", "") for c in columns)]
    lines = [
        f"`{result['command']}`",
        "",
        f"code {result.get('code', 'unknown')}, torch {result['torch']}, threads: {result['threads']},"
        f" {result['date']}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]

    def cell(key: str, value) -> str:
        if value is None:
            return "-"
        if key.endswith(("_accuracy", "_compute")):
            return f"{100 * value:.2f}%"
        if key == "greedy_price":
            return f"{value:.3f}"
        return f"{value:.2f}" if isinstance(value, float) else f"{value}"

    for seed, row in result["seeds"].items():
        lines.append("| " + " | ".join([seed, *(cell(c, row.get(c)) for c in columns)]) + " |")
    for stat in ("mean", "std"):
        values = [cell(c, result["spread"][c][stat]) if c in result["spread"] else "" for c in columns]
        lines.append("| " + " | ".join([f"**{stat}**", *values]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="skipjump/configs/digits.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, choices=(1, 2))
    parser.add_argument("--nproc", type=int, default=1, help="ranks per run (> 1: torchrun, one thread each)")
    parser.add_argument("--runs", default="runs/seeds", help="parent folder of the runs' directories")
    parser.add_argument("--out", required=True, help="result file (.json); a .md table is written beside it")
    parser.add_argument("--collect", nargs="+", metavar="RUN_DIR", help="summarise finished runs, train nothing")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.nproc < 1 or (args.nproc > 1 and args.jobs > 1):
        parser.error("--nproc must be >= 1, and runs on several ranks go one at a time (--jobs 1)")

    stamp = int(time.time())
    threads = 1 if args.jobs > 1 or args.nproc > 1 else None
    rows, pending = {}, [] if args.collect else list(args.seeds)
    for run_dir in args.collect or []:
        rows[str(read_config(run_dir).seed)] = seed_row(Path(run_dir))
    running: list[tuple[int, Path, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < args.jobs:
            seed = pending.pop(0)
            run_dir = Path(args.runs) / f"{Path(args.config).stem}__{seed}__{stamp}"
            running.append((seed, run_dir, run_seed(args.config, seed, run_dir, args.overrides, threads, args.nproc)))
            print(f"seed {seed}: {run_dir}", flush=True)
        seed, run_dir, proc = running.pop(0)
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            print(f"error: seed {seed} failed (exit {proc.returncode}): {stderr.strip()[-300:]}", file=sys.stderr)
            return 1
        rows[str(seed)] = seed_row(run_dir, stdout)
        print(f"seed {seed}: done in {rows[str(seed)]['train_seconds']}s of training", flush=True)

    numeric = [k for k, v in next(iter(rows.values())).items() if isinstance(v, int | float)]
    numeric = [k for k in numeric if all(row.get(k) is not None for row in rows.values())]
    result = {
        **provenance(),
        "threads": f"{args.nproc} ranks (torchrun), OMP_NUM_THREADS=1 per rank"
        if args.nproc > 1
        else "OMP_NUM_THREADS=1 per run, 2 runs side by side"
        if threads
        else f"{torch.get_num_threads()} threads",
        "seeds": dict(sorted(rows.items())),
        "spread": {key: spread([row[key] for row in rows.values()]) for key in numeric},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
