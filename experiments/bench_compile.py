"""What ``trainer.compile`` buys: a config's training steps with and without compiled layers, side by side.

    python experiments/bench_compile.py [--config skipjump/configs/digits.yaml] [--rounds 10] [--steps 10]
                                        [--out results/bench_compile.json] [key=value ...]

Builds the config's trainer with ``trainer.compile=true`` and warms it up (the compile happens
there). Then, ``--rounds`` times, it runs ``--steps`` supervised steps and ``--steps`` policy
steps with its compiled layers and again with them switched off (the same model, trained on by
both, so neither waits for a policy or network the other does not have; the machine's drift hits
both alike). Prints the median milliseconds per step of each kind and the ratio eager / compiled.
Only full-depth supervised steps run compiled layers: policy steps are a control (ratio ~1).
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench_speed import write_json
from profile_step import timed_steps

from skipjump.config import load
from skipjump.provenance import provenance
from skipjump.trainer import build

KINDS = ("supervised", "policy")
MODES = ("eager", "compiled")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="skipjump/configs/digits.yaml")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10, help="steps of each kind per round")
    parser.add_argument("--out", help="also write the JSON result here")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be >= 1")
    trainer = build(load(args.config, [*args.overrides, "trainer.compile=true"]))
    t = trainer.config.trainer
    if t.schedule != "alternate" or t.supervised_path != "full":
        parser.error("times the alternating schedule with full-depth supervised steps (what compile speeds up)")
    first = {"supervised": 0, "policy": t.warmup_steps + t.supervised_steps}  # a step of each kind
    stack, compiled_layers = trainer.model.stack, trainer.model.stack.compiled_layers
    started = time.perf_counter()
    for kind in KINDS:
        timed_steps(trainer, first[kind], 3)
    compile_seconds = time.perf_counter() - started
    times: dict[tuple[str, str], list[float]] = {(mode, kind): [] for mode in MODES for kind in KINDS}
    for _ in range(args.rounds):
        for mode in MODES:
            stack.compiled_layers = compiled_layers if mode == "compiled" else []
            for kind in KINDS:
                times[(mode, kind)] += timed_steps(trainer, first[kind], args.steps)
    result = {**provenance(), "rounds": args.rounds, "steps": args.steps, "warm_up_seconds": compile_seconds}
    print(f"warm-up (the compile included): {compile_seconds:.1f} s")
    for kind in KINDS:
        eager, compiled = (1e3 * statistics.median(times[(mode, kind)]) for mode in MODES)
        result[kind] = {"eager_ms": eager, "compiled_ms": compiled, "speedup": eager / compiled}
        print(
            f"{kind:<10} eager {eager:6.1f} ms   compiled {compiled:6.1f} ms   eager / compiled {eager / compiled:.2f}"
        )
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
