"""Train a jump network whose jump policy is a REINFORCE agent, then evaluate it.

    python experiments/train.py --config skipjump/configs/digits.yaml [key=value ...] [--run-dir DIR]
    python experiments/train.py --resume RUN_DIR [key=value ...]

Overrides are dotted config keys, e.g. ``trainer.steps=300 seed=2 agent.baseline=self_critical``.
Writes a run directory (default runs/<config>__<seed>__<unix time>); see skipjump/runlog.py.
SIGINT/SIGTERM save a checkpoint and exit (130/143); ``--resume`` continues from it.
Exit codes: 0 done, 1 non-finite loss/reward/gradient or a failed write mid-run (the last good checkpoint
is kept), 2 bad config, data, checkpoint or a run directory that cannot be written (before any training).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from skipjump.checkpoint import remove_stale_temporaries
from skipjump.config import ConfigError, load
from skipjump.evaluate import evaluate, format_difficulty, format_table
from skipjump.monitor import Monitor
from skipjump.runlog import RunLog
from skipjump.runs import LOAD_ERRORS, read_run, restore
from skipjump.trainer import NonFiniteError, build, stop_on_signals

# What a resumed run may change: when it stops and what it logs, never what it learns.
RESUMABLE = ("trainer.steps", "trainer.log_every", "trainer.eval_every", "trainer.checkpoint_every")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="YAML config, e.g. skipjump/configs/digits.yaml")
    source.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    parser.add_argument("--run-dir", help="where to write a new run (default runs/<config>__<seed>__<time>)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args(argv)

    run_dir = Path(args.resume or args.run_dir or "")
    try:
        if args.resume:
            for override in args.overrides:
                if override.partition("=")[0] not in RESUMABLE:
                    raise ConfigError(f"override {override!r}: a resumed run may only change {', '.join(RESUMABLE)}")
            config, state = read_run(run_dir, args.overrides)
        else:
            config = load(args.config, args.overrides)
            run_dir = Path(args.run_dir or f"runs/{Path(args.config).stem}__{config.seed}__{int(time.time())}")
            if (run_dir / "metrics.jsonl").exists() or (run_dir / "checkpoints").exists():
                raise ConfigError(f"{run_dir} already holds a run: continue it with --resume or pick another --run-dir")
            state = None
        run = RunLog(run_dir, config, resume_step=None if state is None else state.get("step"))
        trainer = build(config, Monitor(run, config.trainer))
        if state is not None:
            restore(trainer, state, run.checkpoint_path)  # every entry checked before any is used
            remove_stale_temporaries(run.checkpoint_path)
        run.open()
    except LOAD_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: cannot write {describe(error, run_dir)}", file=sys.stderr)
        return 2

    started = time.perf_counter()
    try:
        with stop_on_signals(trainer):
            trainer.train()
        if trainer.stop_signal is not None:
            trainer.monitor.save(trainer)
            run.close()
            print(f"stopped at step {trainer.step}; resume with: python experiments/train.py --resume {run_dir}")
            return 128 + trainer.stop_signal
        trained = time.perf_counter() - started
        results = evaluate(
            trainer.model,
            trainer.task,
            config.trainer.eval_batch_size,
            config.seed,
            trainer.first_decision(),
            trainer.policy_split,
        )
        summaries = {name: result.summary for name, result in results.items()}
        run.write_summary(trainer.step, summaries, {name: result.samples for name, result in results.items()})
        trainer.monitor.log_evaluation(trainer.step, results)
        run.close()
    except NonFiniteError as error:
        close_quietly(run)
        print(f"error: {error}; {kept(run)}", file=sys.stderr)
        return 1
    except OSError as error:
        close_quietly(run)
        print(f"error: step {trainer.step}: cannot write {describe(error, run_dir)}; {kept(run)}", file=sys.stderr)
        return 1

    print(f"\n{trainer.step} steps in {trained:.0f}s, evaluated in {time.perf_counter() - started - trained:.0f}s")
    print(format_table(summaries))
    static, random, cascade = (summaries[k] for k in ("static_matched", "random_matched", "cascade_matched"))
    print(f"static_matched path: {static['path']}; random_matched p = {random['p']:.3f}")
    print(f"cascade_matched: path {cascade['path']}, full depth too for {cascade['escalated']:.1%}")
    gap = summaries["greedy"]["gap_closed"]
    print(
        f"oracle_matched (a ceiling: it reads the labels, {summaries['oracle_matched']['searched']}); gap closed "
        + ("n/a (headroom under two samples)" if gap is None else f"{gap:+.2f}")
    )
    if "by_difficulty" in summaries["greedy"]:
        print(format_difficulty(summaries))
    print(f"\nrun directory: {run_dir}\nTensorBoard:   tensorboard --logdir {run_dir.parent}")
    return 0


def describe(error: OSError, run_dir: Path) -> str:
    """One line for an OSError: the file (else the run directory) and the reason, never a traceback."""
    where = error.filename if error.filename and str(error.filename) != str(run_dir) else ""
    reason = error.strerror or " ".join(str(error).split()) or type(error).__name__
    return f"{where or f'the run directory {run_dir}'}: {reason}"


def kept(run: RunLog) -> str:
    """Where the last good checkpoint is (a failed write never replaces it), for the error line."""
    if run.checkpoint_path.is_file():
        return f"the last good checkpoint is kept in {run.checkpoint_path}"
    return f"no checkpoint was written to {run.checkpoint_path}"


def close_quietly(run: RunLog) -> None:
    """Close the run after a failure; a second failure (the disk still full) must not hide the first."""
    try:
        run.close()
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
