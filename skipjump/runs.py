"""Reading a run directory: the one loader that resuming, analysis scripts and notebooks use.

Nothing in a run directory can run code: config.yaml is read with ``yaml.safe_load`` and checked
field by field, the checkpoint with the safe loader (tensors and plain values only) and checked
entry by entry against the trainer it restores, the traces with ``allow_pickle=False``. Any bad
file raises one of :data:`LOAD_ERRORS` with a one-line message naming the file and what is wrong.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from skipjump.checkpoint import (
    CheckpointError,
    check_counts,
    check_module_state,
    check_random_states,
    describe_tensor,
    load_checkpoint,
    load_module_state,
)
from skipjump.config import Config, ConfigError, cut, from_dict, read_mapping
from skipjump.runlog import checkpoint_path
from skipjump.tasks import DataError, JumpModel, Task
from skipjump.trainer import STATE_KEYS, Trainer, build


class TraceError(ValueError):
    """A missing or malformed ``traces/<policy>.npz``; the message names the file."""


LOAD_ERRORS = (ConfigError, CheckpointError, DataError, TraceError)

# traces/<policy>.npz as evaluate() writes it: name -> (allowed dtype kinds, dimensions); N rows each.
TRACE_ARRAYS = {
    "actions": ("i", 2),  # (N, L - 1), -1 where no decision was made
    "executed": ("b", 2),  # (N, L)
    "layers_executed": ("iu", 1),
    "label": ("iu", 1),
    "correct": ("b", 1),
    "loss": ("f", 1),
    "compute_fraction": ("f", 1),
}
OPTIONAL_TRACE_ARRAYS = {  # tasks whose difficulty is known by construction (k-hop)
    "difficulty": ("iu", 1),
    "fewest_layers": ("i", 1),  # the fewest layers of a fixed path that answers right; -1: none does
}


# Options whose default changed, and the value a run whose config.yaml predates them (has no such key) trained with
PREDATING = {"agent.teacher": "labels", "trainer.policy_rows": "held_out"}


def read_run(run_dir: str | Path, overrides: list[str] = ()) -> tuple[Config, dict[str, Any]]:
    """The run's config (with ``overrides``) and its last checkpoint's state."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run directory")
    return read_config(run_dir, overrides), load_checkpoint(checkpoint_path(run_dir))


def read_config(run_dir: str | Path, overrides: list[str] = ()) -> Config:
    """The run's config.yaml with ``overrides``; keys it predates (``PREDATING``) take the value it trained with."""
    saved = read_mapping(Path(run_dir) / "config.yaml")
    older = [f"{key}={value}" for key, value in PREDATING.items() if not has_key(saved, key)]
    return from_dict(saved, [*older, *overrides])


def has_key(data: dict, dotted: str) -> bool:
    section, key = dotted.split(".")
    return isinstance(data.get(section), dict) and key in data[section]


def load_trained(run_dir: str | Path) -> tuple[Trainer, dict[str, Any]]:
    """A trainer built from the run's config whose model holds its last checkpoint's weights (and its count of
    policy updates, which a curriculum's first decision follows), and that checkpoint.

    Its layers are never compiled (``trainer.compile`` off): reading a run needs no C++ compiler."""
    config, state = read_run(run_dir, ["trainer.compile=false"])
    trainer = build(config)
    path = checkpoint_path(run_dir)
    load_module_state(trainer.model, state["model"], path, "the model")
    check_counts(state, path, ("policy_updates",))
    trainer.policy_updates = state["policy_updates"]  # so that first_decision() is the run's last (a curriculum's)
    return trainer, state


def load_run(run_dir: str | Path) -> tuple[Config, Task, JumpModel]:
    """(config, task, model) of a run directory, the model holding its last checkpoint's weights, in eval mode."""
    trainer, _ = load_trained(run_dir)
    return trainer.config, trainer.task, trainer.model.eval()


def restore(trainer: Trainer, state: Any, path: str | Path) -> None:
    """Load a checkpoint's ``state`` into ``trainer`` after :func:`check_state`: a malformed entry is
    a CheckpointError now, never a crash (or a silently wrong run) some steps later."""
    check_state(trainer, state, path)
    trainer.load_state_dict(state, str(path))


def check_state(trainer: Trainer, state: Any, path: str | Path) -> None:
    """CheckpointError (naming ``path`` and the entry) unless ``state`` has the layout, types, dtypes and
    shapes of ``trainer.state_dict()``, with valid generator states, batch orders and positions."""

    def malformed(where: str, what: str) -> CheckpointError:
        return CheckpointError(f"{path}: malformed checkpoint ({where}: {what})")

    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a skipjump checkpoint (it holds a {type(state).__name__}, not a mapping)")
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    check_counts(state, path)
    if "global_batch" in state and not (type(state["global_batch"]) is int and state["global_batch"] > 0):
        raise malformed("global_batch", f"got {cut(state['global_batch'], 60, quote=True)}, must be a count > 0")
    check_module_state(trainer.model, state["model"], path, "the model")

    updates = state["updates"]
    reference = trainer.updates.state_dict()
    _check_keys(updates, reference, "updates", malformed)
    check_module_state(trainer.updates.agent, updates["agent"], path, "the agent (baseline)")
    for name in ("network_optimizer", "policy_optimizer"):
        optimizer = getattr(trainer.updates, name)
        _check_optimizer(updates[name], optimizer, f"updates.{name}", malformed)

    reference = trainer.schedule.state_dict()
    _check_like(state["schedule"], reference, "schedule", malformed)
    for name, sampler in state["schedule"].items():
        order, size = sampler["order"], len(reference[name]["order"])
        if not torch.equal(torch.sort(order).values, torch.arange(size)):
            raise malformed(f"schedule.{name}.order", f"not a permutation of 0..{size - 1}")
        if type(sampler["position"]) is not int or not 0 <= sampler["position"] <= size:
            raise malformed(f"schedule.{name}.position", f"got {cut(sampler['position'])}, must be in [0, {size}]")
        try:
            torch.Generator().set_state(sampler["generator"])
        except RuntimeError as error:
            raise malformed(f"schedule.{name}.generator", cut(str(error))) from None

    check_random_states(state["random"], path)
    _check_window(state["window"], trainer.model.stack.num_layers, malformed)


def _check_keys(value: Any, reference: dict, where: str, malformed: Any) -> None:
    if not isinstance(value, dict):
        raise malformed(where, f"expected a mapping, got {type(value).__name__}")
    missing = [key for key in reference if key not in value]
    unexpected = [key for key in value if key not in reference]
    if missing or unexpected:
        parts = (f"missing {cut(missing)}" if missing else "", f"unexpected {cut(unexpected)}" if unexpected else "")
        raise malformed(where, ", ".join(part for part in parts if part))


def _check_like(value: Any, reference: Any, where: str, malformed: Any) -> None:
    """``value`` has ``reference``'s structure: keys, lengths, tensor dtypes and shapes, kinds of plain value."""
    if isinstance(reference, torch.Tensor):
        if not isinstance(value, torch.Tensor):
            raise malformed(where, f"expected a tensor {describe_tensor(reference)}, got {type(value).__name__}")
        if value.dtype != reference.dtype or value.shape != reference.shape:
            raise malformed(where, f"expected {describe_tensor(reference)}, got {describe_tensor(value)}")
    elif isinstance(reference, dict):
        _check_keys(value, reference, where, malformed)
        for key, item in reference.items():
            _check_like(value[key], item, f"{where}.{key}", malformed)
    elif isinstance(reference, list | tuple):
        if not isinstance(value, type(reference)) or len(value) != len(reference):
            raise malformed(
                where, f"expected a {type(reference).__name__} of {len(reference)}, got {cut(value, 60, quote=True)}"
            )
        for i, (item, expected) in enumerate(zip(value, reference)):
            _check_like(item, expected, f"{where}[{i}]", malformed)
    elif _is_number(reference):
        if not _is_number(value) or not math.isfinite(value):
            raise malformed(where, f"expected a finite number, got {cut(value, 60, quote=True)}")
    elif type(value) is not type(reference):
        raise malformed(where, f"expected {type(reference).__name__}, got {cut(value, 60, quote=True)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_optimizer(state: Any, optimizer: torch.optim.Optimizer, where: str, malformed: Any) -> None:
    """An optimizer's state: its parameter groups as this optimizer has them, per-parameter tensors shaped
    like their parameters (0-dimensional counters aside)."""
    reference = optimizer.state_dict()
    _check_keys(state, reference, where, malformed)
    groups = state["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(reference["param_groups"]):
        raise malformed(f"{where}.param_groups", f"expected a list of {len(reference['param_groups'])} groups")
    params = {}
    for i, (group, expected, live) in enumerate(zip(groups, reference["param_groups"], optimizer.param_groups)):
        if not isinstance(group, dict):
            raise malformed(f"{where}.param_groups[{i}]", f"expected a mapping, got {type(group).__name__}")
        ids = group.get("params")
        if not isinstance(ids, list) or any(type(j) is not int for j in ids) or ids != expected["params"]:
            raise malformed(f"{where}.param_groups[{i}].params", "not this model's parameters")
        for key in sorted((expected.keys() & group.keys()) - {"params"}):  # torch fills in keys older ones lack
            _check_like(group[key], expected[key], f"{where}.param_groups[{i}].{key}", malformed)
        params.update(zip(ids, live["params"]))
    per_parameter = state["state"]
    if not isinstance(per_parameter, dict):
        raise malformed(f"{where}.state", f"expected a mapping, got {type(per_parameter).__name__}")
    for key, entry in per_parameter.items():
        if key not in params or not isinstance(entry, dict):
            raise malformed(f"{where}.state", f"entry {cut(key, 40)} is not a parameter's state")
        for name, value in entry.items():
            if not isinstance(value, torch.Tensor):
                raise malformed(
                    f"{where}.state.{key}.{cut(name, 40)}", f"expected a tensor, got {type(value).__name__}"
                )
            parameter = params[key]
            if value.dim() == 0:
                continue  # a step counter
            if value.shape != parameter.shape or value.dtype != parameter.dtype:
                raise malformed(
                    f"{where}.state.{key}.{cut(name, 40)}",
                    f"expected {describe_tensor(parameter)} like its parameter, got {describe_tensor(value)}",
                )


def _check_window(window: Any, num_layers: int, malformed: Any) -> None:
    """The monitor's logging window: scalars name -> list of numbers, paths a list of (actions, executed)."""
    _check_keys(window, {"scalars": None, "paths": None}, "window", malformed)
    scalars, paths = window["scalars"], window["paths"]
    if not isinstance(scalars, dict) or not all(
        isinstance(key, str) and isinstance(values, list) and all(_is_number(v) for v in values)
        for key, values in scalars.items()
    ):
        raise malformed("window.scalars", "expected a mapping of names to lists of numbers")
    if not isinstance(paths, list):
        raise malformed("window.paths", f"expected a list, got {type(paths).__name__}")
    for i, pair in enumerate(paths):
        valid = (
            isinstance(pair, tuple | list)
            and len(pair) == 2
            and all(isinstance(t, torch.Tensor) and t.dim() == 2 for t in pair)
            and pair[0].dtype == torch.int64
            and pair[1].dtype == torch.bool
            and pair[0].shape[1] == num_layers - 1
            and tuple(pair[1].shape) == (pair[0].shape[0], num_layers)
        )
        if not valid:
            raise malformed(
                f"window.paths[{i}]",
                f"expected (actions int64 (N, {num_layers - 1}), executed bool (N, {num_layers}))",
            )


def read_trace(run_dir: str | Path, policy: str) -> dict[str, np.ndarray]:
    """``traces/<policy>.npz`` of a run, every array of :data:`TRACE_ARRAYS` checked; TraceError otherwise.

    Read with ``allow_pickle=False``: an object array (pickled Python objects) is refused, never unpickled."""
    run_dir = Path(run_dir)
    if not re.fullmatch(r"\w+", policy):
        raise TraceError(f"policy {cut(policy, 60, quote=True)}: expected a name such as greedy or full")
    if not run_dir.is_dir():
        raise TraceError(f"{run_dir}: no such run directory")
    path = run_dir / "traces" / f"{policy}.npz"
    if not path.is_file():
        raise TraceError(f"{path}: no such trace file")
    arrays = {}
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise TraceError(f"{path}: cannot read as .npz ({type(error).__name__}: {cut(str(error))})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise TraceError(f"{path}: not an .npz archive (a single array)")
    with archive:
        for name, (kinds, dims) in (TRACE_ARRAYS | OPTIONAL_TRACE_ARRAYS).items():
            if name not in archive.files:
                if name in OPTIONAL_TRACE_ARRAYS:
                    continue
                raise TraceError(f"{path}: missing array '{name}'")
            try:
                array = archive[name]
            except Exception as error:  # noqa: BLE001 - object arrays, truncated members, bad headers
                raise TraceError(f"{path}: cannot read '{name}' ({type(error).__name__}: {cut(str(error))})") from None
            if array.dtype.kind not in kinds or array.ndim != dims:
                raise TraceError(
                    f"{path}: '{name}' must be {dims}-dimensional of kind {kinds}, got {array.dtype} {array.shape}"
                )
            arrays[name] = array
    present = [name for name in OPTIONAL_TRACE_ARRAYS if name in arrays]
    if present and len(present) < len(OPTIONAL_TRACE_ARRAYS):
        raise TraceError(
            f"{path}: '{present[0]}' without {', '.join(repr(n) for n in OPTIONAL_TRACE_ARRAYS if n not in present)}"
        )
    rows = len(arrays["label"])
    layers = arrays["executed"].shape[1]
    for name, array in arrays.items():
        if len(array) != rows:
            raise TraceError(f"{path}: '{name}' has {len(array)} rows, 'label' has {rows}")
    if arrays["actions"].shape[1] != layers - 1:
        raise TraceError(f"{path}: 'actions' must have {layers - 1} columns (one fewer than 'executed')")
    return arrays
