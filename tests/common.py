"""Shared by the tests: paths, a tiny model config and the train script as a module."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "experiments" / "configs" / "digits.yaml")
sys.path.insert(0, str(ROOT / "experiments"))
import train  # noqa: E402, F401

TINY = [  # a model small enough for many short runs per test
    "model.dims=16",
    "model.num_layers=4",
    "model.heads=2",
    "model.memory_slots=8",
    "model.policy_hidden=16",
    "trainer.batch_size=16",
    "trainer.eval_batch_size=256",
]
