"""skipjump: learned per-sample layer skipping with a REINFORCE jump policy."""

from skipjump.compat import skip_layer
from skipjump.config import StackConfig
from skipjump.connections import MiniHyperConnection
from skipjump.gates import MemoryGate, StraightThroughThreshold, straight_through_threshold
from skipjump.layer import JumpLayer, SelfAttention
from skipjump.paths import enumerate_paths, path_to_actions
from skipjump.policy import JumpPolicy
from skipjump.registration import register_envs
from skipjump.stack import JumpStack, JumpTrace, Routing

register_envs()  # gymnasium.make("skipjump/Digits-v0", ...): see skipjump/env.py

__all__ = [
    "JumpLayer",
    "JumpPolicy",
    "JumpStack",
    "JumpTrace",
    "MemoryGate",
    "MiniHyperConnection",
    "Routing",
    "SelfAttention",
    "StackConfig",
    "StraightThroughThreshold",
    "enumerate_paths",
    "path_to_actions",
    "skip_layer",
    "straight_through_threshold",
]
