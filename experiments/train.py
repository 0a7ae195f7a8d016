"""Train a jump network whose jump policy is a REINFORCE agent, then evaluate it.

    python experiments/train.py --config experiments/configs/digits.yaml [key=value ...] [--run-dir DIR]
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
from skipjump.evaluate import evaluate, format_table
from skipjump.monitor import Monitor
from skipjump.runlog import RunLog
from skipjump.runs import LOAD_ERRORS, read_run
from skipjump.trainer import NonFiniteError, build, stop_on_signals

# What a resumed run may change: when it stops and what it logs, never what it learns.
RESUMABLE = ("trainer.steps", "trainer.log_every", "trainer.eval_every", "trainer.checkpoint_every")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="YAML config, e.g. experiments/configs/digits.yaml")
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
            trainer.load_state_dict(state, str(run.checkpoint_path))
            remove_stale_temporaries(run.checkpoint_path)
        run.open()
    except LOAD_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: cannot write the run directory {run_dir}: {describe(error)}", file=sys.stderr)
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
        run.close()
        print(f"error: {error}; the last good checkpoint is kept in {run.checkpoint_path}", file=sys.stderr)
        return 1
    except OSError as error:
        print(
            f"error: step {trainer.step}: cannot write {describe(error)}; "
            f"the last good checkpoint is kept in {run.checkpoint_path}",
            file=sys.stderr,
        )
        return 1

    print(f"\n{trainer.step} steps in {trained:.0f}s, evaluated in {time.perf_counter() - started - trained:.0f}s")
    print(format_table(summaries))
    static, random = summaries["static_matched"], summaries["random_matched"]
    print(f"static_matched path: {static['path']}; random_matched p = {random['p']:.3f}")
    print(f"\nrun directory: {run_dir}\nTensorBoard:   tensorboard --logdir {run_dir.parent}")
    return 0


def describe(error: OSError) -> str:
    """One line for an OSError: the file and the reason, never a traceback."""
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or type(error).__name__}"


if __name__ == "__main__":
    sys.exit(main())
