"""Train a jump network whose jump policy is a REINFORCE agent, then evaluate it.

    python experiments/train.py --config experiments/configs/digits.yaml [key=value ...] [--run-dir DIR]

Overrides are dotted config keys, e.g. ``trainer.steps=300 seed=2 agent.baseline=self_critical``.
Writes a run directory (default runs/<config>__<seed>__<unix time>); see skipjump/runlog.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from skipjump.checkpoint import seed_everything
from skipjump.config import ConfigError, load
from skipjump.evaluate import evaluate, format_table
from skipjump.runlog import RunLog
from skipjump.tasks import DataError, make_task
from skipjump.trainer import Trainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config, e.g. experiments/configs/digits.yaml")
    parser.add_argument("--run-dir", help="where to write the run (default runs/<config>__<seed>__<time>)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args(argv)

    try:
        config = load(args.config, args.overrides)
        seed_everything(config.seed)
        task = make_task(config.task, config.seed)
    except (ConfigError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    run_dir = Path(args.run_dir or f"runs/{Path(args.config).stem}__{config.seed}__{int(time.time())}")
    model = task.build_model(config.model)
    run = RunLog(run_dir, config)
    trainer = Trainer(config, task, model, run)
    started = time.perf_counter()
    trainer.train()
    trained = time.perf_counter() - started

    results = evaluate(model, task, config.trainer.eval_batch_size, config.seed)
    summaries = {name: result.summary for name, result in results.items()}
    run.write_summary(trainer.step, summaries, {name: result.samples for name, result in results.items()})
    trainer.log_evaluation(results)
    run.close()

    print(f"\n{trainer.step} steps in {trained:.0f}s, evaluated in {time.perf_counter() - started - trained:.0f}s")
    print(format_table(summaries))
    static, random = summaries["static_matched"], summaries["random_matched"]
    print(f"static_matched path: {static['path']}; random_matched p = {random['p']:.3f}")
    print(f"\nrun directory: {run_dir}\nTensorBoard:   tensorboard --logdir {run_dir.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
