"""One layer of the jump stack: optional self-attention, then the seed's gated update."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from skipjump.connections import MiniHyperConnection
from skipjump.gates import MemoryGate


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention sublayer. x (N, T, D), mask (N, T) bool -> (N, T, D)."""

    def __init__(self, dims: int, heads: int, causal: bool = False) -> None:
        super().__init__()  # dims % heads == 0 is checked with the rest of the architecture (check_stack)
        self.heads, self.causal = heads, causal
        self.norm = nn.LayerNorm(dims)
        self.qkv = nn.Linear(dims, 3 * dims)
        self.out = nn.Linear(dims, dims)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm(x)).view(n, t, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # (N, H, T, d_head)
        allowed = None if mask is None else mask[:, None, None, :]  # key padding: (N, 1, 1, T)
        if self.causal and allowed is not None:
            allowed = allowed & torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        causal = self.causal and allowed is None
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, is_causal=causal)
        return self.out(y.transpose(1, 2).reshape(n, t, d))

    def flops(self, tokens: int) -> int:
        dims = self.out.in_features
        return 2 * tokens * (4 * dims * dims) + 4 * tokens * tokens * dims


class JumpLayer(nn.Module):
    """x (N, T, D), mask (N, T) bool or None -> (N, T, D).

        x <- x + attention(x)                          if attention
        p  = layer_norm(x)
        u  = mini_hc(adapter(p))                       adapter and mini_hc each optional
        x <- x + gate(p) * token_gate(x) * u           token_gate in {0, 1}, straight-through

    A token whose gate is 0 keeps its value; the seed zeroed it and updated the others from
    LayerNorm(0), an input-independent vector. The token gate reads x detached (see forward).
    """

    def __init__(
        self,
        dims: int,
        heads: int = 4,
        *,
        attention: bool = False,
        adapter: bool = False,
        mini_hc: bool = True,
        hc_expansion: int = 2,
        memory_slots: int = 64,
        gate_threshold: float = 0.5,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.attention = SelfAttention(dims, heads, causal) if attention else None
        self.norm = nn.LayerNorm(dims)
        self.gate = nn.Sequential(nn.Linear(dims, 1), nn.Sigmoid())
        self.adapter = nn.Linear(dims, dims) if adapter else None
        self.mini_hc = MiniHyperConnection(dims, hc_expansion) if mini_hc else None
        self.token_gate = MemoryGate(dims, memory_slots, gate_threshold)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.attention is not None:
            x = x + self.attention(x, mask)
        p = self.norm(x)
        update = p
        if self.adapter is not None:
            update = self.adapter(update)
        if self.mini_hc is not None:
            update = self.mini_hc(update)
        # The gate reads a detached x: its straight-through gradient is biased, and flowing into
        # the residual stream it made training diverge; the gate still learns through its weights.
        keep, _ = self.token_gate(x.detach())
        return x + self.gate(p) * keep * update

    def flops(self, tokens: int) -> int:
        """Analytic FLOPs (2 per multiply-add, matmuls only) for one sample of ``tokens`` tokens."""
        dims = self.norm.normalized_shape[0]
        total = self.token_gate.flops(tokens) + 2 * tokens * dims  # token gate + layer gate
        for part in (self.attention, self.mini_hc):
            total += part.flops(tokens) if part is not None else 0
        if self.adapter is not None:
            total += 2 * tokens * dims * dims
        return total
