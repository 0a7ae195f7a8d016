"""The seed's ``skip_layer`` API on top of :class:`JumpStack` (a thin compatibility layer)."""

from __future__ import annotations

import torch

from skipjump.config import StackConfig
from skipjump.stack import JumpStack


class skip_layer(JumpStack):  # noqa: N801 - the seed's name, kept for compatibility
    """``skip_layer(dims, head, layer, mini_hc=True, hc_expansion_rate=2)`` as in the seed.

    Faithful to the seed: no attention sublayer, and one jump distribution per sample from the
    pooled input (policy inputs "input"). ``head`` sets the heads an attention sublayer would
    use (``JumpStack`` with ``attention=True``). The seed's top-level ``mgate``, which its
    forward never used, is gone: ``update_threshold`` now moves the per-layer gates.
    """

    def __init__(self, dims: int, head: int, layer: int, mini_hc: bool = True, hc_expansion_rate: int = 2) -> None:
        config = StackConfig(
            dims=dims,
            num_layers=layer,
            heads=head,
            attention=False,
            mini_hc=mini_hc,
            hc_expansion=hc_expansion_rate,
            max_jump=min(2, layer - 1),
            policy_inputs="input",
        )
        super().__init__(config)
        self.logs: dict[str, list[list[int]]] = {}

    def forward(
        self, x: torch.Tensor, xa: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D). ``xa`` is accepted and ignored, as in the seed."""
        out, trace = super().forward(x, mask)
        self.logs = {"jumps": trace.jumps()}
        return out
