"""Tasks behind one interface; ``make_task`` builds one from a config."""

from __future__ import annotations

from skipjump.config import ConfigError, TaskConfig
from skipjump.tasks.base import JumpModel, Split, Task
from skipjump.tasks.digits import DataError, DigitsTask
from skipjump.tasks.khop import KHopTask

TASKS = {"digits": DigitsTask, "khop": KHopTask}


def make_task(config: TaskConfig, seed: int) -> Task:
    if config.name not in TASKS:
        raise ConfigError(f"task.name: got {config.name!r}, allowed: {', '.join(TASKS)}")
    return TASKS[config.name].from_config(config, seed)


__all__ = ["TASKS", "DataError", "DigitsTask", "JumpModel", "KHopTask", "Split", "Task", "make_task"]
