"""Train a jump network whose jump policy is a REINFORCE agent, then evaluate it.

    python experiments/train.py --config skipjump/configs/digits.yaml [key=value ...] [--run-dir DIR]
    python experiments/train.py --resume RUN_DIR [key=value ...]

Overrides are dotted config keys, e.g. ``trainer.steps=300 seed=2 agent.baseline=self_critical``.
Writes a run directory (default runs/<config>__<seed>__<unix time>); see skipjump/runlog.py.
SIGINT/SIGTERM save a checkpoint and exit (130/143); ``--resume`` continues from it.

Several processes (CPU cores, GPUs, machines): ``torchrun --nproc_per_node=N experiments/train.py ...``
trains data-parallel, ``trainer.batch_size`` rows per rank (skipjump/distributed.py); rank 0 alone
logs, evaluates and writes the run directory. A run resumes on any number of ranks.
Exit codes: 0 done, 1 non-finite loss/reward/gradient or a failed write mid-run (the last good checkpoint
is kept), 2 bad config, data, checkpoint or a run directory that cannot be written (before any training).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from skipjump.budget import calibrate
from skipjump.checkpoint import remove_stale_temporaries
from skipjump.config import Config, ConfigError, load
from skipjump.distributed import Ranks, setup, teardown
from skipjump.evaluate import evaluate, format_difficulty, format_table
from skipjump.monitor import Monitor
from skipjump.runlog import RunLog, checkpoint_path
from skipjump.runs import LOAD_ERRORS, read_run, restore
from skipjump.trainer import NonFiniteError, Trainer, build, stop_on_signals

# What a resumed run may change: when it stops, what it logs, where it runs, and the rows per rank
# (so that M ranks can continue N ranks' run with the same global batch), never what it learns.
RESUMABLE = (
    "trainer.steps",
    "trainer.log_every",
    "trainer.eval_every",
    "trainer.checkpoint_every",
    "trainer.device",
    "trainer.batch_size",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="YAML config, e.g. skipjump/configs/digits.yaml")
    source.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    parser.add_argument("--run-dir", help="where to write a new run (default runs/<config>__<seed>__<time>)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args(argv)

    try:
        if args.resume:
            for override in args.overrides:
                if override.partition("=")[0] not in RESUMABLE:
                    raise ConfigError(f"override {override!r}: a resumed run may only change {', '.join(RESUMABLE)}")
            config, state = read_run(args.resume, args.overrides)
        else:
            config, state = load(args.config, args.overrides), None
        ranks = setup(config.trainer.device)
    except LOAD_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # Tiny gradients and optimiser moments underflow into denormal floats, which CPUs handle slowly;
    # flushed to zero (a rounding change below 1e-38), make demo trained in 183 s against 188 s and
    # printed the same table (results/demo_timing.md).
    torch.set_flush_denormal(True)
    try:
        return train(args, config, state, ranks)
    finally:
        teardown()


def train(args: argparse.Namespace, config: Config, state: dict | None, ranks: Ranks) -> int:
    """Train on this rank; rank 0 writes the run directory, evaluates and prints the results."""
    default = f"runs/{Path(args.config or '').stem}__{config.seed}__{int(time.time())}"
    run_dir = Path(args.resume or args.run_dir or ranks.share(default))  # one name, whatever each rank's clock says
    run, problem = None, None
    try:
        if state is None and ((run_dir / "metrics.jsonl").exists() or (run_dir / "checkpoints").exists()):
            raise ConfigError(f"{run_dir} already holds a run: continue it with --resume or pick another --run-dir")
        if ranks.main:
            run = RunLog(run_dir, config, resume_step=None if state is None else state.get("step"))
        trainer = build(config, run and Monitor(run, config.trainer), ranks)
        if state is not None:
            restore(trainer, state, checkpoint_path(run_dir))  # every entry checked before any is used
        if run is not None:
            if state is not None:
                remove_stale_temporaries(run.checkpoint_path)
                note_batch_change(state, trainer)
            run.open()
    except LOAD_ERRORS as error:
        problem = f"error: {error}"
    except OSError as error:
        problem = f"error: cannot write {describe(error, run_dir)}"
    problem = ranks.first_error(problem)  # one rank's problem stops them all, here, before any collective
    if problem is not None:
        if ranks.main:
            print(problem, file=sys.stderr)
        return 2
    ranks.broadcast(trainer.model, trainer.updates.agent)  # one starting point, whatever each rank read

    started = time.perf_counter()
    try:
        with stop_on_signals(trainer):  # kept through the save: a second SIGTERM must not cut it short
            trainer.train()
            if trainer.stop_signal is not None:  # every rank stops after the same step (Ranks.agree)
                if run is None:
                    print(f"rank {ranks.rank}: stopped at step {trainer.step}", file=sys.stderr)
                else:
                    trainer.monitor.save(trainer)
                    run.close()
                    print(
                        f"stopped at step {trainer.step}; resume with: python experiments/train.py --resume {run_dir}"
                    )
                ranks.barrier()  # no rank exits before the checkpoint is written: torchrun would stop rank 0
                return 128 + trainer.stop_signal
        if run is None:
            return 0  # evaluation runs once, on rank 0
        trained = time.perf_counter() - started
        if config.agent.greedy_budget is not None:  # rank 0 alone: it evaluates and writes the checkpoint
            budget, batch = config.agent.greedy_budget, config.trainer.eval_batch_size
            fill = config.agent.greedy_fill
            priced = calibrate(
                trainer.model, trainer.task, trainer.policy_split, budget, trainer.first_decision(), batch, fill
            )
            trainer.monitor.save(trainer)  # the checkpoint decodes as the evaluation below does
        results = evaluate(
            trainer.model,
            trainer.task,
            config.trainer.eval_batch_size,
            config.seed,
            trainer.first_decision(),
            trainer.policy_split,
        )
        summaries = {name: result.summary for name, result in results.items()}
        if config.agent.greedy_budget is not None:
            summaries["greedy"]["price"] = priced
        run.write_summary(trainer.step, summaries, {name: result.samples for name, result in results.items()})
        trainer.monitor.log_evaluation(trainer.step, results)
        run.close()
    except NonFiniteError as error:
        close_quietly(run)
        print(f"error: rank {ranks.rank}: {error}; {kept(run_dir)}", file=sys.stderr)
        return 1
    except OSError as error:
        close_quietly(run)
        print(f"error: step {trainer.step}: cannot write {describe(error, run_dir)}; {kept(run_dir)}", file=sys.stderr)
        return 1

    print(f"\n{trainer.step} steps in {trained:.0f}s, evaluated in {time.perf_counter() - started - trained:.0f}s")
    print(format_table(summaries))
    static, random, cascade = (summaries[k] for k in ("static_matched", "random_matched", "cascade_matched"))
    print(f"static_matched path: {static['path']}; random_matched p = {random['p']:.3f}")
    print(f"cascade_matched: path {cascade['path']}, full depth too for {cascade['escalated']:.1%}")
    if "price" in summaries["greedy"]:
        priced = summaries["greedy"]["price"]
        print(
            f"greedy price per skipped layer {priced['price']:+.3f}: compute on the held-out rows"
            f" {priced['compute_before']:.1%} -> {priced['compute_after']:.1%}"
        )
        if not priced["met"]:
            print(f"warning: greedy cannot meet agent.greedy_budget={config.agent.greedy_budget}", file=sys.stderr)
    gap = summaries["greedy"]["gap_closed"]
    print(
        f"oracle_matched (a ceiling: it reads the labels, {summaries['oracle_matched']['searched']}); gap closed "
        + ("n/a (headroom under two samples)" if gap is None else f"{gap:+.2f}")
    )
    if "difficulty_matched" in summaries:
        per_k, k_gap = summaries["difficulty_matched"]["paths"], summaries["difficulty_matched"]["gap_closed"]
        print(
            "difficulty_matched (one path per k, chosen on training rows): "
            + ", ".join(f"k={k} {path}" for k, path in per_k.items())
            + ("" if k_gap is None else f"; gap closed {k_gap:+.2f}")
        )
    if "by_difficulty" in summaries["greedy"]:
        print(format_difficulty(summaries))
    print(f"\nrun directory: {run_dir}\nTensorBoard:   tensorboard --logdir {run_dir.parent}")
    return 0


def note_batch_change(state: dict, trainer: Trainer) -> None:
    """Say so when a resumed run takes a different number of rows per step than the run it continues."""
    before, now, ranks = state.get("global_batch"), trainer.global_batch, trainer.ranks.world
    if before is not None and before != now:
        keep = f"; trainer.batch_size={before // ranks} keeps it" if before % ranks == 0 else ""
        print(f"note: the run took {before} rows per step over all ranks, now {now} ({ranks} x batch_size){keep}")


def describe(error: OSError, run_dir: Path) -> str:
    """One line for an OSError: the file (else the run directory) and the reason, never a traceback."""
    where = error.filename if error.filename and str(error.filename) != str(run_dir) else ""
    reason = error.strerror or " ".join(str(error).split()) or type(error).__name__
    return f"{where or f'the run directory {run_dir}'}: {reason}"


def kept(run_dir: Path) -> str:
    """Where the last good checkpoint is (a failed write never replaces it), for the error line."""
    path = checkpoint_path(run_dir)
    if path.is_file():
        return f"the last good checkpoint is kept in {path}"
    return f"no checkpoint was written to {path}"


def close_quietly(run: RunLog | None) -> None:
    """Close the run after a failure; a second failure (the disk still full) must not hide the first."""
    try:
        if run is not None:
            run.close()
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
