"""The jump stack: layers, per-sample routing, working memory, jump mix and final gated MLP.

For each layer i, only the rows (samples) whose current position is i are gathered with
``index_select``, run through the layer and written back with ``index_copy``: a skipped layer
costs nothing for that sample. After layer i < L - 2 each of those samples takes a jump action
a in {0..min(max_jump, L - 2 - i)} and moves to layer i + 1 + a: longer jumps would all land on
the last layer, so they are one choice, not several. After layer L - 2 there is nothing to
decide: the last layer runs. With K sampled paths per input (``Routing.samples``), copies of
an input that decided alike so far are in the same state: each layer and jump mix runs once
for them, on the state's first row (the other rows of ``h`` go stale and are never read).

    work_mem <- g * work_mem + (1 - g) * mean_t(x),   g = sigmoid(linear(mean_t(x)))  (a lerp)
    x        <- x + w_s * x0 + (1 - w_s) * work_mem   if the jump skips s > 0 layers, if jump_mix
    out       = x + sigmoid(gate(x)) * mlp(layer_norm(x))

``forward`` returns the output together with a :class:`JumpTrace` of the paths taken.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical

from skipjump.config import StackConfig, check_stack
from skipjump.layer import JumpLayer
from skipjump.paths import executed_to_paths, next_layer
from skipjump.policy import JumpPolicy, PolicyWeights

RoutingMode = Literal["sample", "greedy", "full", "random", "fixed", "imitate"]
ROUTING_MODES = typing.get_args(RoutingMode)


@dataclass(frozen=True)
class Routing:
    """How jump actions are chosen.

    mode: "sample" (multinomial from the policy), "greedy" (argmax), "full" (never jump),
        "random" (each decision jumps with probability ``p``, by max_jump: so compute falls
        smoothly from full depth at p = 0 to the all-longest-jumps path at p = 1),
        "fixed" (``actions``: (L - 1,) for every sample or (B, L - 1) per sample),
        "imitate" (as fixed, and the trace holds the policy's log-probability of those actions).
    first_decision: decisions at layers before this one are forced to 0 (a curriculum that
        unlocks decisions from the last layer backwards).
    explore: "sample" draws from (1 - explore) * pi + explore * uniform, a floor under every
        action's probability; the trace's log-probs and entropy are the mixture's.
    samples: "sample" draws K paths per input and returns K blocks of the batch (rows ordered as
        ``x.repeat(K, 1, 1)``); "imitate" runs K given paths per input (``actions`` (K * B, L - 1),
        e.g. every path of each input). Copies of an input that made the same decisions so far
        hold the same state, so a layer runs once for them (late in training most copies agree).
        This needs layers that treat each row alike whatever else is in the batch (no dropout).
    full_depth_copy: "sample" also runs every input at full depth, as one more block after the K
        sampled ones (the last B rows of the output and trace): the full-depth teacher's reference.
        It shares each layer with the sampled copies still in its state, so it costs only the rows
        where every copy has jumped. It draws nothing (log-probs and entropy 0), so the sampled
        copies draw exactly what they would without it.
    """

    mode: RoutingMode = "sample"
    p: float = 0.5
    actions: torch.Tensor | None = None
    first_decision: int = 0
    explore: float = 0.0
    samples: int = 1
    full_depth_copy: bool = False

    @property
    def uses_policy(self) -> bool:
        return self.mode in ("sample", "greedy", "imitate")


@dataclass(frozen=True)
class Probe:
    """What the task's head makes of the current state, read by a policy with ``policy_confidence``.

    features: (h (N, T, D), mask (N, T) or None) -> (N, PROBE_FEATURES), computed without gradients
    flops: per call for one sample (charged to the policy's compute)
    """

    features: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
    flops: float


PROBE_FEATURES = 2  # top probability, normalised entropy


class MixWeights(NamedTuple):
    """What the jump mix reads (:meth:`JumpStack.mix_weights`)."""

    by_skip: torch.Tensor  # (2, max_jump + 1): per layers skipped, the weight of x and of work_mem; 0 for none
    gate_weight: torch.Tensor  # (1, D): the working memory's gate, sigmoid(linear(mean_t(x)))
    gate_bias: torch.Tensor  # (1,)


@dataclass
class JumpTrace:
    """Per-sample record of one forward pass. B = batch, L = number of layers."""

    actions: torch.Tensor  # (B, L - 1) long; -1 where the sample made no decision
    executed: torch.Tensor  # (B, L) bool; layers each sample ran
    log_probs: torch.Tensor  # (B,) sum of log pi(a) over the policy's decisions; grads reach the policy only
    entropy: torch.Tensor  # (B,) mean policy entropy over the sample's decisions (0 if none)
    layers_executed: torch.Tensor  # (B,) long
    compute_fraction: torch.Tensor  # (B,) executed FLOPs / full-depth FLOPs, policy included
    features: torch.Tensor  # (B, D) pooled stack input, detached (input for value baselines)
    # (B, L - 1) log pi(a) of each decision, 0 where none (rows sum to log_probs); None if not from a stack
    decision_log_probs: torch.Tensor | None = None

    def rows(self, index: torch.Tensor | slice) -> JumpTrace:
        """The trace of rows ``index`` ((N,) or a slice) only."""
        return JumpTrace(**{f.name: select(getattr(self, f.name), index) for f in dataclasses.fields(self)})

    def paths(self) -> list[tuple[int, ...]]:
        return executed_to_paths(self.executed)

    def unique_paths(self) -> int:
        return count_unique_rows(self.executed)

    def jumps(self) -> list[list[int]]:
        """The seed's ``logs['jumps']``, per sample: the layer landed on after each jump."""
        landed = []
        for actions in self.actions.tolist():
            landing = [next_layer(i, a, len(actions) + 1) for i, a in enumerate(actions)]
            landed.append([there for i, there in enumerate(landing) if there > i + 1])
        return landed


def count_unique_rows(executed: torch.Tensor) -> int:
    """Distinct rows of a (B, L) bool mask; rows packed into integers (unique over rows is slow)."""
    if executed.shape[1] > 62:
        return int(torch.unique(executed, dim=0).shape[0])
    bits = 1 << torch.arange(executed.shape[1], device=executed.device)
    return int(torch.unique((executed.long() * bits).sum(dim=1)).numel())  # no integer matmul on CUDA


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over tokens of the valid positions: x (N, T, D), mask (N, T) bool -> (N, D)."""
    if mask is None:
        return x.mean(dim=1)
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1)


def select(z: torch.Tensor | None, index: torch.Tensor | slice | None) -> torch.Tensor | None:
    """z's rows ``index`` ((N,) or a slice; None: all of them); None stays None."""
    if z is None or index is None:
        return z
    return z[index] if isinstance(index, slice) else z.index_select(0, index)


def states_of(rows: torch.Tensor, twin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """rows (N,), twin (B,) -> (run (U,), back (N,)): the rows that are their own twin, one per
    state, and for each row the index of its state's row in ``run``."""
    twins = twin.index_select(0, rows)
    run = rows[twins == rows]  # a host sync
    slot = torch.full_like(twin, -1).index_copy_(0, run, torch.arange(run.numel(), device=rows.device))
    return run, slot.index_select(0, twins)


def write_rows(z: torch.Tensor, index: torch.Tensor | None, rows: torch.Tensor, owned: bool) -> torch.Tensor:
    """z with its rows ``index`` (N,) replaced by ``rows`` (index None: rows is the whole new z). In
    place where z is this pass's own tensor (``owned``: not an input or a parameter's view) and autograd
    tracks neither: a routed pass without gradients (policy steps, evaluation) copies no whole z."""
    if index is None:
        return rows
    if owned and not (z.requires_grad or rows.requires_grad):
        return z.index_copy_(0, index, rows)
    return z.index_copy(0, index, rows)


def regroup(twin: torch.Tensor, rows: torch.Tensor, actions: torch.Tensor, choices: int) -> torch.Tensor:
    """twin (B,) after ``rows`` (N,) took ``actions`` (N,) in [0, choices): a row's twin becomes the
    first row that shared its twin and took the same action."""
    key = twin.index_select(0, rows) * choices + actions
    first = torch.full((twin.numel() * choices,), twin.numel(), dtype=torch.long, device=twin.device)
    first.scatter_reduce_(0, key, rows, reduce="amin")
    return twin.index_copy(0, rows, first.index_select(0, key))


def parameters_excluding(module: nn.Module, excluded: nn.Module) -> list[nn.Parameter]:
    """``module``'s parameters that are not ``excluded``'s."""
    skip = {id(p) for p in excluded.parameters()}
    return [p for p in module.parameters() if id(p) not in skip]


class JumpStack(nn.Module):
    """x (B, T, D), mask (B, T) bool (True = real token) or None -> (K * B, T, D), K = ``Routing.samples``
    (plus one with ``Routing.full_depth_copy``)."""

    def __init__(self, config: StackConfig) -> None:
        super().__init__()
        c = config
        check_stack(c)
        self.config = c
        self.layers = nn.ModuleList(
            JumpLayer(
                c.dims,
                c.heads,
                attention=c.attention,
                adapter=i % 2 == 0,  # the seed's adapters sit on even layers
                mini_hc=c.mini_hc,
                hc_expansion=c.hc_expansion,
                memory_slots=c.memory_slots,
                gate_threshold=c.gate_threshold,
                causal=c.causal,
            )
            for i in range(c.num_layers)
        )
        self.work_memory = nn.Parameter(torch.zeros(1, 1, c.dims))
        self.work_memory_gate = nn.Sequential(nn.Linear(c.dims, 1), nn.Sigmoid())
        seed_weights = [0.1, 0.05, 0.01] + [0.01] * max(0, c.max_jump - 3)
        self.jump_weights = nn.Parameter(torch.tensor(seed_weights[: c.max_jump]))  # w_a = [a - 1]
        self.final_gate = nn.Sequential(nn.Linear(c.dims, 1), nn.Sigmoid())
        self.final_norm = nn.LayerNorm(c.dims)
        self.final_mlp = nn.Sequential(nn.Linear(c.dims, 4 * c.dims), nn.SiLU(), nn.Linear(4 * c.dims, c.dims))
        extra = PROBE_FEATURES if c.policy_confidence else 0
        with torch.random.fork_rng(devices=[]):  # a CPU stream of its own: the network's weights do
            torch.default_generator.manual_seed(torch.initial_seed() + 1)  # not depend on the policy
            self.policy = JumpPolicy(
                c.dims,
                c.num_layers,
                c.max_jump,
                c.policy_hidden,
                c.policy_inputs,
                extra,
                c.policy_state,
                c.policy_dropout,
            )
        self.register_buffer("last_loss", torch.tensor(float("nan")))
        self._flops_cache: dict = {}  # tokens -> (L,) FLOPs; (tokens, device, dtype) -> the same, there
        self.compiled_layers: list[Callable] = []  # compile_full_depth: each layer compiled, for full-depth training

    def compile_full_depth(self) -> None:
        """Compile each layer (torch.compile, fixed shapes) for the passes that train at full depth.

        Only those: every row runs every layer there, so the shapes never change, while routed
        passes gather a different number of rows at each layer and would recompile without end.
        The compiled layers share the layers' parameters; they are not submodules (no state)."""
        self.compiled_layers = [torch.compile(layer, dynamic=False) for layer in self.layers]

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    def network_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the policy's."""
        return parameters_excluding(self, self.policy)

    # -- routing ---------------------------------------------------------------------------

    def resolve_routing(self, routing: Routing | str | None, batch: int) -> Routing:
        if routing is None:
            routing = Routing("sample" if self.training else "greedy")
        if isinstance(routing, str):
            routing = Routing(routing)
        if routing.mode not in ROUTING_MODES:
            raise ValueError(f"routing mode must be one of {ROUTING_MODES}, got {routing.mode!r}")
        if not 0.0 <= routing.p <= 1.0:
            raise ValueError(f"random routing needs 0 <= p <= 1, got {routing.p}")
        if not 0.0 <= routing.explore < 1.0:
            raise ValueError(f"explore must be in [0, 1), got {routing.explore}")
        k = routing.samples
        if not isinstance(k, int) or k < 1 or (k > 1 and routing.mode not in ("sample", "imitate")):
            got = f"{k} with {routing.mode} routing"
            raise ValueError(f"samples must be 1, or more with sample or imitate routing; got {got}")
        if routing.full_depth_copy and routing.mode != "sample":
            raise ValueError(f"full_depth_copy needs sample routing, got {routing.mode} routing")
        if not 0 <= routing.first_decision < self.num_layers:
            raise ValueError(f"first_decision must be in [0, {self.num_layers - 1}], got {routing.first_decision}")
        if routing.mode in ("fixed", "imitate"):
            a = routing.actions
            decisions, rows = self.num_layers - 1, k * batch
            if a is None or a.shape not in ((decisions,), (rows, decisions)):
                shape = None if a is None else tuple(a.shape)
                expected = f"({decisions},) or ({rows}, {decisions})"
                raise ValueError(f"{routing.mode} routing needs actions of shape {expected}, got {shape}")
            if a.dtype != torch.long or int(a.max()) > self.config.max_jump or int(a.min()) < -1:
                raise ValueError(f"{routing.mode} actions must be long values in [-1, {self.config.max_jump}]")
            routing = dataclasses.replace(routing, actions=a.to(self.work_memory.device))
        return routing

    def distinct_actions(self, layer: int) -> int:
        """How many actions after ``layer`` land on different layers (jumps past the end all land on the last)."""
        return min(self.config.max_jump, self.num_layers - 2 - layer) + 1

    def _decide(
        self,
        routing: Routing,
        layer: int,
        pooled: torch.Tensor | None,
        rows,
        input_logits,
        probed=None,
        weights: PolicyWeights | None = None,
        bonus=None,
    ):
        """Actions (N,) for the rows at ``layer``, and their log-probs and entropies (or None).

        pooled (N, D) is the rows' mean hidden state, read detached by a state policy with ``weights``
        (the policy's, looked up once per pass); probed (N, PROBE_FEATURES) the head's confidence on it,
        or None; bonus (max_jump + 1,) what greedy adds to each action's logit (``greedy_bonus``).
        """
        n, device = rows.numel(), rows.device
        choices = self.distinct_actions(layer)
        if routing.mode == "full" or layer < routing.first_decision:
            return torch.zeros(n, dtype=torch.long, device=device), None, None
        if routing.mode == "random":
            jump = torch.rand(n, device=device) < routing.p
            return jump.long() * (choices - 1), None, None
        given = None
        if routing.mode in ("fixed", "imitate"):
            a = routing.actions
            given = (a[layer].expand(n) if a.dim() == 1 else a[rows, layer]).clamp(min=0, max=choices - 1)
            if routing.mode == "fixed":  # -1 ("no decision here") runs the next layer
                return given, None, None
        if input_logits is not None:
            logits = input_logits.index_select(0, rows)
        else:
            logits = self.policy.logits(weights, pooled.detach(), layer, probed)
        if routing.mode == "greedy":
            logits = logits + bonus
        if choices <= self.config.max_jump:  # longer jumps land on the last layer too: one choice, not several
            logits = logits[:, :choices]
        if routing.mode == "greedy":  # nothing to learn from: no distribution to build
            return logits.argmax(dim=-1), None, None
        logits = logits.to(self.work_memory.dtype)  # under bf16 autocast: log-probs in the stack's dtype
        if routing.mode == "sample" and routing.explore > 0:
            probs = torch.softmax(logits, dim=-1).mul(1 - routing.explore).add(routing.explore / choices)
            dist = Categorical(probs=probs, validate_args=False)
        else:
            dist = Categorical(logits=logits, validate_args=False)  # validation would cost host syncs
        actions = dist.sample() if given is None else given
        return actions, dist.log_prob(actions), dist.entropy()

    def _decide_beside_full_copy(
        self, routing: Routing, layer: int, pooled, rows, input_logits, probed, weights, copy_rows
    ):
        """``_decide`` for the sampled rows; the full-depth copy's ``copy_rows`` rows run the next layer,
        with log-prob and entropy 0. The copy never jumps, so all its rows are at every layer, and the
        last of ``rows`` (which ascend): no search needed."""
        first = slice(0, rows.numel() - copy_rows)
        decided = self._decide(
            routing, layer, select(pooled, first), rows[first], input_logits, select(probed, first), weights
        )
        return tuple(None if z is None else torch.cat([z, z.new_zeros(copy_rows)]) for z in decided)

    # -- forward ---------------------------------------------------------------------------

    def check_input(self, x: torch.Tensor, mask: torch.Tensor | None) -> None:
        dims = self.config.dims
        dtype = self.work_memory.dtype
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != dims:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected x of shape (batch, tokens, {dims}), got {got}")
        if x.dtype != dtype:
            raise ValueError(f"expected x of dtype {dtype}, got {x.dtype}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"expected a non-empty batch and sequence, got shape {tuple(x.shape)}")
        if mask is None:
            return
        if not isinstance(mask, torch.Tensor) or mask.shape != x.shape[:2] or mask.dtype != torch.bool:
            got = (tuple(mask.shape), mask.dtype) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"expected mask of shape {tuple(x.shape[:2])} and dtype torch.bool, got {got}")
        if not bool(mask.any(dim=1).all()):
            raise ValueError("mask leaves a sample with no real token: every row needs at least one True")

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        routing: Routing | str | None = None,
        probe: Probe | None = None,
    ) -> tuple[torch.Tensor, JumpTrace]:
        """x (B, T, D), mask (B, T) or None -> output (K * B, T, D) and the trace of the paths taken
        (K * B rows too), K = ``routing.samples`` (1 unless set), plus one with ``routing.full_depth_copy``.

        probe: the task head's view of a state, needed by a policy with ``policy_confidence``.
        """
        self.check_input(x, mask)
        routing = self.resolve_routing(routing, x.shape[0])
        copies = routing.samples + routing.full_depth_copy
        full_rows = routing.samples * x.shape[0] if routing.full_depth_copy else None  # the first full-depth row
        features = masked_mean(x, mask).detach()
        if copies > 1:
            x, features = x.repeat(copies, 1, 1), features.repeat(copies, 1)
            mask = None if mask is None else mask.repeat(copies, 1)
        b, t, _ = x.shape
        num_layers = self.num_layers
        device = x.device
        state_policy = routing.uses_policy and self.policy.inputs == "state"
        if state_policy and self.policy.extra and probe is None:
            raise ValueError("this policy reads the task head's confidence (policy_confidence): pass a probe")

        input_logits = None
        if routing.uses_policy and self.policy.inputs == "input":  # the full-depth copy draws nothing
            input_logits = self.policy(features if full_rows is None else features[:full_rows])
        position = torch.zeros(b, dtype=torch.long, device=device)  # next layer each sample runs
        # rows waiting at each layer, counted on the host from each decision's landings: a layer that no row
        # or every row waits at needs no search (a host sync)
        waiting = [b] + [0] * (num_layers - 1)
        actions = torch.full((b, num_layers - 1), -1, dtype=torch.long, device=device)
        executed = torch.zeros(b, num_layers, dtype=torch.bool, device=device)
        log_probs = x.new_zeros(b)
        decision_log_probs = [x.new_zeros(b)] * (num_layers - 1)
        entropy = x.new_zeros(b)
        h, work_mem = x, self.work_memory.expand(b, 1, -1)
        own_h = own_mem = False  # h starts as x (the jump mix reads it), work_mem as a view of the parameter
        jump_mix = self.config.jump_mix and routing.mode != "full"
        mix = self.mix_weights() if jump_mix else None
        bonus = self.greedy_bonus() if routing.mode == "greedy" else None  # once per pass, not per decision
        weights = self.policy.weights() if state_policy else None
        probe = probe if state_policy and self.policy.extra else None
        all_rows = torch.arange(b, device=device)
        # twin[r]: the first row in the same state as row r (a copy of its input that decided alike so far)
        twin = torch.arange(b, device=device) % (b // copies) if copies > 1 else None

        compiled = self.compiled_layers if routing.mode == "full" and torch.is_grad_enabled() else []
        for i, layer in enumerate(compiled or self.layers):
            if routing.mode == "full" or waiting[i] == b:  # every row runs this layer: no need to look
                rows = all_rows
            elif waiting[i] == 0:
                continue
            else:
                rows = torch.nonzero(position == i).flatten()  # a host sync (two more with twins)
            # run: the rows that compute (None: all B), back: (N,) where each row's state is among them
            if twin is None:
                run, back = (None if rows.numel() == b else rows), None
            else:
                run, back = states_of(rows, twin)
            run_mask = select(mask, run)
            hi = layer(select(h, run), run_mask)
            executed[:, i].index_fill_(0, rows, True)
            write, source, mem_source = run, None, run  # the rows of h the layer's output goes to

            if i == num_layers - 2:  # every action lands on the last layer: nothing to decide
                position.index_fill_(0, rows, num_layers - 1)
                waiting[-1] += rows.numel()
            elif i < num_layers - 2:
                # the state policy's input and the working memory's, per computed row; unused otherwise
                pooled = masked_mean(hi, run_mask) if state_policy or jump_mix else None
                probing = probe is not None and i >= routing.first_decision
                probed = probe.features(hi.detach(), run_mask) if probing else None
                policy_inputs = select(pooled, back), rows, input_logits, select(probed, back), weights
                if full_rows is None:
                    a, logp, ent = self._decide(routing, i, *policy_inputs, bonus)  # (N,) each; a skips a layers
                else:
                    a, logp, ent = self._decide_beside_full_copy(routing, i, *policy_inputs, b - full_rows)
                actions[:, i].index_copy_(0, rows, a)
                position.index_copy_(0, rows, i + 1 + a)
                if routing.mode != "full":  # full depth needs no count (every row runs every layer)
                    per_action = torch.bincount(a).tolist()  # a host sync per decision
                    for skip, count in enumerate(per_action):
                        waiting[i + 1 + skip] += count
                if logp is not None:
                    log_probs = log_probs.index_add(0, rows, logp)
                    decision_log_probs[i] = decision_log_probs[i].index_copy(0, rows, logp)
                    entropy = entropy.index_add(0, rows, ent)
                if twin is not None:  # copies that took different actions part: their first rows hold the states
                    before, twin = twin, regroup(twin, rows, a, self.config.max_jump + 1)
                    firsts = torch.nonzero(twin.index_select(0, rows) == rows).flatten()  # positions in rows
                    write, source, a = rows.index_select(0, firsts), back.index_select(0, firsts), a[firsts]
                    mem_source = before.index_select(0, write)  # a new first row's memory is its old twin's
                    hi = hi.index_select(0, source)
                if jump_mix:  # the working memory is read only here, so it is kept only then
                    x_rows, memory = select(x, write), select(work_mem, mem_source)
                    # the mix adds zeros where no row jumped: left out there, unless its weights would get a
                    # (zero) gradient, which moves them under Adam's momentum where none (None) would not
                    jumped = sum(per_action[1:]) > 0 or mix.by_skip.requires_grad
                    skipped = a if jumped else None
                    hi, wm = self.after_jump(hi, x_rows, memory, select(pooled, source), skipped, mix)
                    work_mem, own_mem = write_rows(work_mem, write, wm, own_mem), True

            h, own_h = write_rows(h, write, hi, own_h), True

        if twin is None:
            out = self.output(h)
        else:  # rows that are not their state's first hold stale values: every row reads its state's
            run, back = states_of(torch.arange(b, device=device), twin)
            out = self.output(h.index_select(0, run)).index_select(0, back)
        probe_flops = 0.0 if probe is None else probe.flops
        log_probs_by_decision = torch.stack(decision_log_probs, dim=1)
        return out, self._make_trace(
            routing, t, actions, executed, log_probs, log_probs_by_decision, entropy, features, probe_flops
        )

    def greedy_bonus(self) -> torch.Tensor:
        """(max_jump + 1,) the policy's greedy price times the layers each action skips (a skips a)."""
        price = self.policy.greedy_price  # a buffer: in the stack's dtype and on its device
        return price * torch.arange(self.config.max_jump + 1, device=price.device)

    def mix_weights(self) -> MixWeights:
        """The jump mix's weights, looked up once per pass (each module lookup costs about 1 us)."""
        w, (gate, _) = self.jump_weights, self.work_memory_gate
        return MixWeights(F.pad(torch.stack([w, 1 - w]), (1, 0)), gate.weight, gate.bias)

    def after_jump(
        self,
        hi: torch.Tensor,
        x: torch.Tensor,
        work_mem: torch.Tensor,
        pooled: torch.Tensor,
        skipped: torch.Tensor | None,
        mix: MixWeights,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The working memory update and the jump mix for N rows that decided to skip ``skipped`` (N,) layers
        (None: none of them skips, so hi is left as it is and the mix's weights get no gradient).

        hi, x (N, T, D): layer output and stack input; work_mem (N, 1, D); pooled (N, D) = mean_t(hi);
        mix from :meth:`mix_weights`. Returns the new hi and work_mem.
        """
        memory = pooled.unsqueeze(1)  # (N, 1, D)
        g = torch.sigmoid(F.linear(memory, mix.gate_weight, mix.gate_bias))
        if g.dtype != memory.dtype:  # bf16 under autocast
            g = g.to(memory.dtype)
        wm = torch.lerp(memory, work_mem, g)
        if skipped is None:
            return hi, wm
        weight_x, weight_mem = mix.by_skip.index_select(1, skipped).view(2, -1, 1, 1)
        return torch.addcmul(torch.addcmul(hi, weight_x, x), weight_mem, wm), wm

    def output(self, h: torch.Tensor) -> torch.Tensor:
        """The final gated MLP, which every sample runs: (B, T, D) -> (B, T, D)."""
        return h + self.final_gate(h) * self.final_mlp(self.final_norm(h))

    # -- accounting ------------------------------------------------------------------------

    def layer_flops(self, tokens: int) -> torch.Tensor:
        """(L,) analytic FLOPs of each layer for one sample of ``tokens`` tokens."""
        if tokens not in self._flops_cache:  # fixed by the architecture: count once per length
            with torch.inference_mode(False):  # a normal tensor even when first asked under inference_mode
                self._flops_cache[tokens] = torch.tensor([float(layer.flops(tokens)) for layer in self.layers])
        return self._flops_cache[tokens]

    def final_flops(self, tokens: int) -> float:
        """FLOPs of the final gated MLP for one sample; it always runs."""
        dims = self.config.dims
        return 2 * tokens * (8 * dims * dims + dims)

    def full_depth_flops(self, tokens: int) -> float:
        return float(self.layer_flops(tokens).sum()) + self.final_flops(tokens)

    def compute_fraction(
        self, layer_runs: torch.Tensor, tokens: int, extra_flops: torch.Tensor | float = 0.0
    ) -> torch.Tensor:
        """(..., L) runs of each layer (counts or expected counts) -> (...) FLOPs over full-depth FLOPs.

        The final gated MLP always runs; ``extra_flops`` (...) adds e.g. the policy's own FLOPs.
        """
        key = (tokens, layer_runs.device, layer_runs.dtype)
        if key not in self._flops_cache:  # a copy to the GPU per forward would stall the host
            with torch.inference_mode(False):
                self._flops_cache[key] = self.layer_flops(tokens).to(layer_runs.device, layer_runs.dtype)
        flops = self._flops_cache[key]
        return (layer_runs @ flops + self.final_flops(tokens) + extra_flops) / self.full_depth_flops(tokens)

    def _make_trace(
        self, routing, tokens, actions, executed, log_probs, decision_log_probs, entropy, features, probe_flops
    ) -> JumpTrace:
        decisions = (actions[:, routing.first_decision :] >= 0).sum(dim=1)
        if not routing.uses_policy:
            policy_calls = torch.zeros_like(decisions)
        elif self.policy.inputs == "input":
            policy_calls = torch.ones_like(decisions)
        else:
            policy_calls = decisions
        policy_flops = policy_calls.to(features.dtype) * (self.policy.flops(tokens) + probe_flops)
        if routing.mode in ("sample", "imitate"):  # the others build no distribution: their entropy stays 0
            entropy = entropy / decisions.clamp(min=1).to(entropy.dtype)
        return JumpTrace(
            actions=actions,
            executed=executed,
            log_probs=log_probs,
            entropy=entropy,
            layers_executed=executed.sum(dim=1),
            compute_fraction=self.compute_fraction(executed.to(features.dtype), tokens, policy_flops),
            features=features,
            decision_log_probs=decision_log_probs,
        )

    # -- the seed's threshold rule ---------------------------------------------------------

    @torch.no_grad()
    def update_threshold(self, loss: float | torch.Tensor, lr: float = 0.01) -> None:
        """Move every token gate's threshold by ``lr``: down (more tokens updated) when the loss
        rose since the last call, up when it did not; clamped to [0, 1] as in the seed.

        Seed fix: it moved an unused gate and compared with a stored loss that stayed 0.
        """
        loss = float(loss)
        previous = float(self.last_loss)
        if previous == previous:  # not NaN: there is a previous loss to compare with
            step = -lr if loss > previous else lr
            for layer in self.layers:
                layer.token_gate.threshold.add_(step).clamp_(0.0, 1.0)
        self.last_loss.fill_(loss)

    def thresholds(self) -> list[float]:
        return [float(layer.token_gate.threshold) for layer in self.layers]
