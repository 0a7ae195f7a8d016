"""skipjump: learned per-sample layer skipping with a REINFORCE jump policy."""

from skipjump.compat import skip_layer
from skipjump.config import StackConfig
from skipjump.connections import MiniHyperConnection
from skipjump.gates import MemoryGate, StraightThroughThreshold, straight_through_threshold
from skipjump.layer import JumpLayer, SelfAttention
from skipjump.paths import enumerate_paths, path_to_actions
from skipjump.policy import JumpPolicy
from skipjump.stack import JumpStack, JumpTrace, Routing

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
