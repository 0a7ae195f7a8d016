"""Shared by the tests: paths, tiny configs, and factories for stacks and trainers."""

import sys
from pathlib import Path

import pytest
import torch

from skipjump import JumpStack, StackConfig
from skipjump.config import Config, from_dict
from skipjump.trainer import Trainer, build, cxx_compiler_found

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "skipjump" / "configs" / "digits.yaml")
sys.path.insert(0, str(ROOT / "experiments"))

TINY = [  # a model small enough for many short runs per test; everything else at the defaults
    "model.dims=16",
    "model.num_layers=4",
    "model.max_jump=2",
    "model.heads=2",
    "model.memory_slots=8",
    "model.policy_hidden=16",
    "trainer.batch_size=16",
    "trainer.eval_batch_size=256",
]


needs_cxx = pytest.mark.skipif(not cxx_compiler_found(), reason="torch.compile needs a C++ compiler")


def tiny_config(*overrides: str) -> Config:
    """The default config shrunk by TINY, 20 steps with a 2-step warm-up, then ``overrides``."""
    return from_dict({}, [*TINY, "trainer.steps=20", "trainer.warmup_steps=2", *overrides])


def tiny_trainer(*overrides: str) -> Trainer:
    return build(tiny_config(*overrides))


def tiny_stack(num_layers: int = 6, max_jump: int = 2, dtype: torch.dtype = torch.float64, **overrides) -> JumpStack:
    """A seeded 16-wide stack (float64 so that routed and one-by-one outputs compare tightly)."""
    torch.manual_seed(0)
    config = StackConfig(
        dims=16, num_layers=num_layers, max_jump=max_jump, heads=2, memory_slots=8, policy_hidden=16, **overrides
    )
    return JumpStack(config).to(dtype)


@pytest.fixture
def make_stack():
    return tiny_stack


@pytest.fixture
def make_trainer():
    return tiny_trainer
