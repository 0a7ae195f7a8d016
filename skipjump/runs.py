"""Reading a run directory: the one loader that resuming, analysis scripts and notebooks use.

Nothing in a run directory can run code: config.yaml is read with ``yaml.safe_load`` and checked
field by field, the checkpoint with the safe loader (tensors and plain values only). Any bad
file raises one of :data:`LOAD_ERRORS` with a one-line message naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skipjump.checkpoint import CheckpointError, load_checkpoint, load_module_state
from skipjump.config import Config, ConfigError, load
from skipjump.runlog import checkpoint_path
from skipjump.tasks import DataError, JumpModel, Task
from skipjump.trainer import build

LOAD_ERRORS = (ConfigError, CheckpointError, DataError)


def read_run(run_dir: str | Path, overrides: list[str] = ()) -> tuple[Config, dict[str, Any]]:
    """The run's config (with ``overrides``) and its last checkpoint's state."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run directory")
    config = load(run_dir / "config.yaml", overrides)
    return config, load_checkpoint(checkpoint_path(run_dir))


def load_run(run_dir: str | Path) -> tuple[Config, Task, JumpModel]:
    """(config, task, model) of a run directory, the model holding its last checkpoint's weights, in eval mode."""
    config, state = read_run(run_dir)
    trainer = build(config)
    load_module_state(trainer.model, state["model"], checkpoint_path(run_dir), "the model")
    return config, trainer.task, trainer.model.eval()
