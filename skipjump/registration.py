"""Gymnasium ids, one per task, registered on ``import skipjump`` (entry points load lazily)."""

from __future__ import annotations

import gymnasium

ENV_IDS = {"digits": "skipjump/Digits-v0", "khop": "skipjump/KHop-v0"}


def register_envs() -> None:
    for task, env_id in ENV_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(
                id=env_id,
                entry_point="skipjump.env:JumpEnv",
                vector_entry_point="skipjump.env:JumpVectorEnv",
                kwargs={"task": task},
            )
