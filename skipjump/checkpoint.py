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

from skipjump.config import cut


class CheckpointError(RuntimeError):
    """An unreadable or mismatched checkpoint; the message names the file."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` so that ``path`` always holds either the old or the new checkpoint, whole."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and not error.filename:  # a failed write or fsync names no file
            raise OSError(error.errno, error.strerror or str(error), str(path)) from error
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
        text = str(error)
        unpickler = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)  # what the safe loader objects to
        detail = unpickler[1] if unpickler else (text.splitlines()[0] if text else "")
        if unpickler and not detail.startswith("Unsupported operand"):  # a pickled callable, class or object
            name = re.search(r"GLOBAL ([\w.<>]+)", detail)
            what = f"a reference to {cut(name[1], 80)}" if name else cut(detail, 100)
            raise CheckpointError(
                f"{path}: refused, it holds more than tensors and plain values ({what}); nothing was run"
            ) from None
        reason = f"{type(error).__name__}: {cut(detail)}" if detail else type(error).__name__
        raise CheckpointError(f"{path}: unreadable checkpoint ({reason})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a skipjump checkpoint (it holds a {type(state).__name__}, not a mapping)")
    if "model" not in state:
        raise CheckpointError(f"{path}: not a skipjump checkpoint (no 'model' entry)")
    return state


# buffers added after checkpoints were written: one missing from a checkpoint is read as 0
# (greedy_price: plain argmax, which is how those runs decoded)
ADDED_BUFFERS = ("greedy_price",)


def load_module_state(module: torch.nn.Module, state: Any, path: str | Path, what: str) -> None:
    """``load_state_dict`` whose failure names the file and the first mismatched tensors."""
    module.load_state_dict(check_module_state(module, state, path, what))


def check_module_state(module: torch.nn.Module, state: Any, path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """CheckpointError unless ``state`` holds exactly ``module``'s tensors, with their shapes and dtypes
    (``ADDED_BUFFERS`` it lacks read as 0); returns it, with those zeros."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: {what} is not a mapping of names to tensors")
    own = module.state_dict()
    added = {k: torch.zeros_like(v) for k, v in own.items() if k.rsplit(".", 1)[-1] in ADDED_BUFFERS and k not in state}
    state = {**state, **added}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {describe_tensor(state[k])} vs {describe_tensor(v)}"
        for k, v in own.items()
        if k in state and (state[k].shape != v.shape or state[k].dtype != v.dtype)
    ]
    if missing or unexpected or shapes:
        detail = "; ".join(
            part
            for part in (
                f"missing {cut(missing[:3])}" if missing else "",
                f"unexpected {cut(unexpected[:3])}" if unexpected else "",
                f"shape or dtype mismatch {cut(shapes[:3], 300)} (checkpoint vs model)" if shapes else "",
            )
            if part
        )
        raise CheckpointError(f"{path}: {what} does not match this architecture: {detail}")
    return state


def check_counts(state: dict, path: str | Path, keys: tuple[str, ...] = ("step", "policy_updates")) -> None:
    """CheckpointError unless each of ``keys`` in ``state`` is a count (an int >= 0, not a bool)."""
    if not all(type(state.get(key)) is int and state[key] >= 0 for key in keys):
        raise CheckpointError(f"{path}: malformed checkpoint ({' and '.join(keys)} must be counts)")


def describe_tensor(tensor: torch.Tensor) -> str:
    """``float32 (16, 4)``: what a tensor is, for error messages."""
    return f"{str(tensor.dtype).removeprefix('torch.')} {tuple(tensor.shape)}"


def random_states() -> dict[str, Any]:
    """Python's, NumPy's and torch's generator states, as tensors and plain values (safe to load)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),  # (version, tuple of ints, float or None)
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }


def check_random_states(states: Any, path: str | Path) -> None:
    """CheckpointError unless ``states`` is what :func:`random_states` returns, every generator's state valid.

    Each state is tried on a scratch generator; NumPy's position is checked here because NumPy accepts
    any and then reads outside the generator's memory (a crash, not an error)."""
    if not isinstance(states, dict) or any(key not in states for key in ("python", "numpy", "torch")):
        raise CheckpointError(f"{path}: malformed checkpoint (random must map python, numpy and torch to states)")
    numpy_state = states["numpy"]
    valid = (
        isinstance(numpy_state, tuple)
        and len(numpy_state) == 5
        and isinstance(numpy_state[0], str)
        and numpy_state[0] == "MT19937"
        and isinstance(numpy_state[1], torch.Tensor)
        and numpy_state[1].dtype == torch.int64
        and tuple(numpy_state[1].shape) == (624,)
        and type(numpy_state[2]) is int
        and 0 <= numpy_state[2] <= 624
        and type(numpy_state[3]) is int
        and numpy_state[3] in (0, 1)
        and type(numpy_state[4]) is float
    )
    if not valid:
        raise CheckpointError(f"{path}: malformed checkpoint (random.numpy is not a NumPy MT19937 state)")
    trials = {
        "python": lambda: random.Random().setstate(states["python"]),
        "numpy": lambda: np.random.RandomState().set_state(
            (numpy_state[0], numpy_state[1].numpy().astype(np.uint32), *numpy_state[2:])
        ),
        "torch": lambda: torch.Generator().set_state(states["torch"]),
    }
    for name, trial in trials.items():
        try:
            trial()
        except Exception as error:  # noqa: BLE001 - each library rejects a bad state its own way
            raise CheckpointError(
                f"{path}: malformed checkpoint (random.{name}: {type(error).__name__}: {cut(str(error))})"
            ) from None


def set_random_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
