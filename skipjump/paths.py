"""Jump paths: the layers a sample runs, and the actions that produce them.

After layer i a sample takes action a in {0..max_jump} and lands on layer min(i + 1 + a, L - 1),
so layer 0 and layer L - 1 always run. A path is the tuple of layers run, e.g. (0, 2, 5).
"""

from __future__ import annotations

import torch


def next_layer(layer: int, action: int, num_layers: int) -> int:
    return min(layer + 1 + action, num_layers - 1)


def enumerate_paths(num_layers: int, max_jump: int) -> list[tuple[int, ...]]:
    """Every distinct path, shortest first (ties in lexicographic order)."""
    found: set[tuple[int, ...]] = set()

    def walk(path: tuple[int, ...]) -> None:
        if path[-1] == num_layers - 1:
            found.add(path)
            return
        for action in range(max_jump + 1):
            walk(path + (next_layer(path[-1], action, num_layers),))

    walk((0,))
    return sorted(found, key=lambda p: (len(p), p))


def count_paths(num_layers: int, max_jump: int) -> int:
    """How many distinct paths ``enumerate_paths`` would list, without listing them."""
    ways = [1] + [0] * (num_layers - 1)  # ways[j]: paths from layer 0 that run layer j
    for here in range(num_layers - 1):
        for there in {next_layer(here, action, num_layers) for action in range(max_jump + 1)}:
            ways[there] += ways[here]
    return ways[-1]


def path_to_actions(path: tuple[int, ...] | list[int], num_layers: int, max_jump: int) -> torch.Tensor:
    """Actions (L - 1,) long, -1 at layers the path does not run; raises on unreachable paths."""
    path = tuple(int(i) for i in path)
    if not path or path[0] != 0 or path[-1] != num_layers - 1:
        raise ValueError(f"a path must start at layer 0 and end at layer {num_layers - 1}, got {path}")
    actions = torch.full((num_layers - 1,), -1, dtype=torch.long)
    for here, there in zip(path, path[1:]):
        action = there - here - 1
        if not 0 <= action <= max_jump:
            raise ValueError(f"path {path}: cannot go from layer {here} to {there} with max_jump={max_jump}")
        actions[here] = action
    return actions


def paths_to_actions(paths: list[tuple[int, ...]], num_layers: int, max_jump: int) -> torch.Tensor:
    """Actions (P, L - 1) of P paths, one row per path (see ``path_to_actions``)."""
    return torch.stack([path_to_actions(path, num_layers, max_jump) for path in paths])


def executed_to_paths(executed: torch.Tensor) -> list[tuple[int, ...]]:
    """Executed mask (B, L) bool -> one path tuple per sample."""
    return [tuple(torch.nonzero(row).flatten().tolist()) for row in executed]
