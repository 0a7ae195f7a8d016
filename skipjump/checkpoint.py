"""Checkpoints written atomically (temporary file, fsync, rename) and read safely, with clear errors.

Reading never runs code: ``torch.load(weights_only=True)`` accepts only tensors and plain Python
values (dict, list, tuple, str, int, float, bool, None), so a crafted pickle in a shared run
directory is refused instead of executed. Everything a checkpoint stores is kept in those forms
(the random generators' states included).
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


class CheckpointError(RuntimeError):
    """An unreadable or mismatched checkpoint; the message names the file."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` so that ``path`` always holds either the old or the new checkpoint, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(path: str | Path) -> None:
    """Delete temporary files a killed ``save_checkpoint`` left beside ``path``."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The state saved at ``path``, loaded without running any code; CheckpointError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - truncated or corrupted files fail in many ways
        foreign = re.search(r"Unsupported (global|class)[^.\n]*", str(error))
        if foreign:  # what the safe loader says of a pickled callable or class
            raise CheckpointError(
                f"{path}: refused, it holds more than tensors and plain values ({foreign[0][:100]})"
            ) from None
        first = str(error).splitlines()[0][:100] if str(error) else ""
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(error).__name__}: {first})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a skipjump checkpoint (no 'model' entry)")
    return state


def load_module_state(module: torch.nn.Module, state: dict[str, Any], path: str | Path, what: str) -> None:
    """``load_state_dict`` whose failure names the file and the first mismatched tensors."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: {what} is not a mapping of names to tensors")
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and (state[k].shape != v.shape or state[k].dtype != v.dtype)
    ]
    if missing or unexpected or shapes:
        detail = "; ".join(
            part
            for part in (
                f"missing {missing[:3]}" if missing else "",
                f"unexpected {unexpected[:3]}" if unexpected else "",
                f"shape or dtype mismatch {shapes[:3]} (checkpoint vs model)" if shapes else "",
            )
            if part
        )
        raise CheckpointError(f"{path}: {what} does not match this architecture: {detail}")
    module.load_state_dict(state)


def random_states() -> dict[str, Any]:
    """Python's, NumPy's and torch's generator states, as tensors and plain values (safe to load)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),  # (version, tuple of ints, float or None)
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }


def set_random_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
