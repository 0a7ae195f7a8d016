"""Environment steps per second: one JumpEnv against JumpVectorEnv, side by side in one run.

    python experiments/bench_env.py [RUN_DIR] [--envs 64] [--rounds 5] [--steps 400] [--out FILE]

A step is one jump decision of one input. Actions are drawn uniformly among each input's
distinct landings (``info["action_mask"]``) in both environments, so both play the same kind of
episode; each round times ``--steps`` steps of the single environment and ``--steps / 4``
batched steps of the vector environment (each moving ``--envs`` inputs), interleaved; medians
over rounds. Without RUN_DIR the untrained network of
the shipped digits config is used (the speed depends on the paths taken, not on training).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from bench_speed import write_json

from skipjump.env import JumpEnv, JumpVectorEnv, load_source
from skipjump.provenance import provenance
from skipjump.runs import LOAD_ERRORS


def random_actions(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, A) bool -> (N,) an action drawn uniformly among each row's allowed ones."""
    return np.argmax(rng.random(masks.shape) * masks, axis=-1)


def single_rate(env: JumpEnv, steps: int, rng: np.random.Generator) -> float:
    _, info = env.reset(seed=int(rng.integers(1 << 30)))
    started = time.perf_counter()
    for _ in range(steps):
        _, _, done, _, info = env.step(int(random_actions(info["action_mask"][None], rng)[0]))
        if done:
            _, info = env.reset()
    return steps / (time.perf_counter() - started)


def vector_rate(envs: JumpVectorEnv, steps: int, rng: np.random.Generator) -> float:
    _, info = envs.reset(seed=int(rng.integers(1 << 30)))
    started = time.perf_counter()
    for _ in range(steps):
        _, _, _, _, info = envs.step(random_actions(info["action_mask"], rng))
    return steps * envs.num_envs / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", nargs="?")
    parser.add_argument("--envs", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--out", metavar="FILE", help="also write the result as JSON, with how it was made")
    args = parser.parse_args(argv)
    if min(args.envs, args.rounds, args.steps) < 1:
        parser.error("--envs, --rounds and --steps must be at least 1")
    try:
        source = load_source(args.run_dir)
    except (*LOAD_ERRORS, ValueError) as error:
        print(f"bench_env.py: {error}", file=sys.stderr)
        return 2
    env, envs = JumpEnv(source=source), JumpVectorEnv(args.envs, source=source)
    rng = np.random.default_rng(0)
    single_rate(env, 20, rng), vector_rate(envs, 5, rng)  # warm-up
    rates: dict[str, list[float]] = {"single": [], "vector": []}
    for _ in range(args.rounds):
        rates["single"].append(single_rate(env, args.steps, rng))
        rates["vector"].append(vector_rate(envs, args.steps // 4 or 1, rng))
    single, vector = (statistics.median(rates[k]) for k in ("single", "vector"))
    print(f"steps per second (median of {args.rounds}, {provenance()['threads']} threads):")
    print(f"  JumpEnv            {single:10.0f}")
    print(f"  JumpVectorEnv({args.envs:>3}) {vector:10.0f}   {vector / single:.1f}x")
    if args.out:
        write_json(
            args.out,
            {
                **provenance(),
                "run_dir": args.run_dir,
                "envs": args.envs,
                "rates": rates,
                "single_steps_per_second": single,
                "vector_steps_per_second": vector,
                "speedup": vector / single,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
