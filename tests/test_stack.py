import subprocess
import sys

import pytest
import torch
from conftest import ROOT, tiny_stack

from skipjump import (
    JumpLayer,
    MemoryGate,
    MiniHyperConnection,
    Routing,
    enumerate_paths,
    path_to_actions,
    skip_layer,
    straight_through_threshold,
)
from skipjump.config import ConfigError, from_dict
from skipjump.paths import paths_to_actions

make_stack = tiny_stack  # 6 layers, max_jump 2, float64


def test_straight_through_threshold_passes_gradient():
    x = torch.tensor([-1.0, 0.2, 0.9], requires_grad=True)
    out = straight_through_threshold(x, torch.tensor(0.5))
    assert out.tolist() == [0.0, 0.0, 1.0]
    (out * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0]


def test_mini_hyper_connection_mixes_per_token_when_tokens_differ_from_dims():
    torch.manual_seed(0)
    hc = MiniHyperConnection(dims=8, expansion=3)
    x = torch.randn(2, 5, 8)
    out = hc(x)
    weights = torch.softmax(hc.mixer(x), dim=-1)
    paths = [x @ w.T + b for w, b in zip(hc.pathways.weight.chunk(3), hc.pathways.bias.chunk(3))]
    expected = torch.relu(sum(weights[..., k : k + 1] * paths[k] for k in range(3)))
    assert out.shape == (2, 5, 8)
    torch.testing.assert_close(out, expected)


def test_token_gate_keeps_gated_off_tokens_and_trains_through_the_threshold():
    torch.manual_seed(0)
    layer = JumpLayer(8, mini_hc=True, adapter=True, memory_slots=4)
    x = torch.randn(3, 4, 8)
    layer.token_gate.threshold.fill_(1e9)
    torch.testing.assert_close(layer(x), x)  # every token gated off: nothing changes
    layer.token_gate.threshold.fill_(-1e9)
    out = layer(x)
    assert (out - x).abs().amax(dim=-1).gt(0).all()  # every token updated
    out.sum().backward()
    assert layer.token_gate.mix.weight.grad.abs().sum() > 0  # straight-through gradient


def test_memory_gate_keeps_exactly_the_tokens_scored_above_its_threshold():
    torch.manual_seed(0)
    gate = MemoryGate(dims=8, memory_slots=4)
    x = torch.randn(2, 3, 8)
    median = float(gate(x)[1].detach().median())
    gate.threshold.fill_(median)  # half the tokens above, half below
    keep, score = gate(x)
    assert keep.shape == score.shape == (2, 3, 1)
    assert torch.equal(keep, (score > median).float())
    assert 0 < int(keep.sum()) < 6  # the gate depends on the token


def test_batched_routing_matches_each_sample_alone_along_its_path():
    stack = make_stack()
    x = torch.randn(8, 5, 16, dtype=torch.float64)
    batched, trace = stack(x, routing="sample")
    actions = trace.actions
    assert len({tuple(r) for r in actions.tolist()}) > 1, "want several distinct paths in this batch"
    for b in range(8):
        alone, alone_trace = stack(x[b : b + 1], routing=Routing("fixed", actions=actions[b]))
        torch.testing.assert_close(alone, batched[b : b + 1])
        assert alone_trace.actions[0].tolist() == actions[b].tolist()


@pytest.mark.parametrize("frozen", [False, True])
def test_a_pass_without_gradients_writes_rows_in_place_and_matches_a_tracked_one(frozen):
    stack = make_stack(num_layers=8, max_jump=3)
    x = torch.randn(6, 3, 16, dtype=torch.float64)
    torch.manual_seed(2)
    tracked, trace = stack(x, routing=Routing("sample", samples=3))  # gradients on: rows copied out of place
    assert trace.unique_paths() > 1  # some layers run on part of the batch: the writes under test happen
    given = Routing("imitate", actions=trace.actions, samples=3)
    # as a policy step runs: the network frozen (its parameters' views no longer require grad), the policy not
    for p in stack.network_parameters():
        p.requires_grad_(not frozen)
    memory = stack.work_memory.detach().clone()
    with torch.set_grad_enabled(frozen):
        untracked, untracked_trace = stack(x, routing=given)
    torch.testing.assert_close(untracked, tracked.detach())  # the copies' x.repeat, read by the jump mix, intact
    assert torch.equal(stack.work_memory, memory)  # never written through its expanded view
    if frozen:  # the policy's gradient survives the in-place writes
        untracked_trace.log_probs.sum().backward()
        assert stack.policy.net[0].weight.grad is not None


def test_flop_counts_cached_under_inference_mode_stay_usable_by_training():
    stack = make_stack()
    with torch.inference_mode():  # as bench_run times a fresh model: the first forward fills the caches
        stack(torch.randn(2, 3, 16, dtype=torch.float64), routing="greedy")
    assert stack._flops_cache and not any(flops.is_inference() for flops in stack._flops_cache.values())


def test_attention_with_padding_mask_matches_each_sample_alone():
    stack = make_stack()
    x = torch.randn(4, 6, 16, dtype=torch.float64)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 4:] = False
    mask[3, 1:] = False
    batched, trace = stack(x, mask, routing="sample")
    actions = trace.actions
    for b in range(4):
        alone, _ = stack(x[b : b + 1], mask[b : b + 1], Routing("fixed", actions=actions[b]))
        torch.testing.assert_close(alone, batched[b : b + 1])
    # Padding really is ignored: changing padded tokens leaves real outputs unchanged.
    x2 = x.clone()
    x2[3, 1:] = 100.0
    out2, _ = stack(x2, mask, Routing("fixed", actions=actions))
    torch.testing.assert_close(out2[3, :1], batched[3, :1])


def test_layers_run_only_on_the_rows_that_land_on_them():
    stack = make_stack()
    rows_seen = {}
    for i, layer in enumerate(stack.layers):
        layer.register_forward_pre_hook(lambda m, args, i=i: rows_seen.__setitem__(i, args[0].shape[0]))
    _, trace = stack(torch.randn(10, 3, 16, dtype=torch.float64), routing="sample")
    executed = trace.executed
    for i in range(6):
        assert rows_seen.get(i, 0) == int(executed[:, i].sum())
    assert executed[:, 0].all() and executed[:, -1].all()
    assert (trace.layers_executed == executed.sum(1)).all()


@pytest.mark.parametrize(
    ("first_decision", "explore", "policy_inputs"), [(0, 0.0, "state"), (3, 0.0, "state"), (0, 0.3, "input")]
)
def test_sampled_copies_of_an_input_run_a_layer_once_until_they_decide_differently(
    first_decision, explore, policy_inputs
):
    stack = make_stack(num_layers=8, max_jump=3, policy_inputs=policy_inputs)
    x = torch.randn(5, 3, 16, dtype=torch.float64)
    mask = torch.tensor([[True, True, False]] * 2 + [[True, True, True]] * 3)
    rows_seen = {}
    for i, layer in enumerate(stack.layers):
        layer.register_forward_pre_hook(lambda m, args, i=i: rows_seen.__setitem__(i, args[0].shape[0]))

    def run(shared: bool):
        rows_seen.clear()
        stack.zero_grad()
        torch.manual_seed(1)
        if shared:
            sample = Routing("sample", samples=4, first_decision=first_decision, explore=explore)
            out, trace = stack(x, mask, routing=sample)
        else:  # each copy computed on its own, as K repeated inputs
            sample = Routing("sample", first_decision=first_decision, explore=explore)
            out, trace = stack(x.repeat(4, 1, 1), mask.repeat(4, 1), routing=sample)
        (out.square().mean() + trace.log_probs.sum()).backward()
        return out, trace, dict(rows_seen), [p.grad.clone() for p in stack.parameters() if p.grad is not None]

    out, trace, seen, grads = run(shared=True)
    apart_out, apart_trace, apart_seen, apart_grads = run(shared=False)
    assert torch.equal(trace.actions, apart_trace.actions)  # the same draws: rows ordered as x.repeat(4)
    torch.testing.assert_close(out, apart_out)
    torch.testing.assert_close(trace.log_probs, apart_trace.log_probs)
    assert len(grads) == len(apart_grads)
    for g, apart in zip(grads, apart_grads):  # the copies' gradients all reach the one computation
        torch.testing.assert_close(g, apart)
    for i in range(8):  # once per input and decisions so far, among the rows that ran layer i
        ran = trace.executed[:, i].nonzero().flatten().tolist()
        states = {(r % 5, tuple(trace.actions[r, :i].tolist())) for r in ran}
        assert seen.get(i, 0) == len(states) and apart_seen.get(i, 0) == len(ran)
    assert seen[0] == 5 and sum(seen.values()) < sum(apart_seen.values())
    assert trace.unique_paths() > 5  # the check above saw copies that parted


@pytest.mark.parametrize(
    ("first_decision", "policy"), [(0, {}), (3, {}), (0, {"policy_inputs": "input", "policy_dropout": 0.3})]
)
def test_a_full_depth_copy_rides_along_without_changing_the_sampled_paths(first_decision, policy):
    stack = make_stack(num_layers=8, max_jump=3, **policy)
    x = torch.randn(5, 3, 16, dtype=torch.float64)
    rows_seen = {}
    for i, layer in enumerate(stack.layers):
        layer.register_forward_pre_hook(lambda m, args, i=i: rows_seen.__setitem__(i, args[0].shape[0]))

    def run(copy: bool):
        rows_seen.clear()
        torch.manual_seed(3)
        sample = Routing("sample", samples=4, first_decision=first_decision, full_depth_copy=copy)
        return *stack(x, routing=sample), dict(rows_seen)

    alone, alone_trace, alone_seen = run(copy=False)
    out, trace, seen = run(copy=True)
    sampled = slice(0, 20)  # 4 blocks of 5, then the full-depth block
    assert torch.equal(trace.actions[sampled], alone_trace.actions)  # the copy draws nothing
    torch.testing.assert_close(out[sampled], alone)
    torch.testing.assert_close(trace.log_probs[sampled], alone_trace.log_probs)
    torch.testing.assert_close(out[20:], stack(x, routing="full")[0])
    assert trace.executed[20:].all() and not trace.log_probs[20:].any() and not trace.entropy[20:].any()
    extra = sum(seen.values()) - sum(alone_seen.values())  # its rows where every copy has jumped
    assert seen[0] == alone_seen[0] == 5 and 0 < extra < 8 * 5


def test_every_path_of_an_input_runs_each_distinct_state_once():
    stack = make_stack(num_layers=8, max_jump=3)
    x = torch.randn(3, 3, 16, dtype=torch.float64)
    paths = enumerate_paths(8, 3)
    actions = paths_to_actions(paths, 8, 3).repeat_interleave(3, dim=0)
    rows_seen = {}
    for i, layer in enumerate(stack.layers):
        layer.register_forward_pre_hook(lambda m, args, i=i: rows_seen.__setitem__(i, args[0].shape[0]))
    out, trace = stack(x, routing=Routing("imitate", actions=actions, samples=len(paths)))
    seen = dict(rows_seen)
    apart_out, apart_trace = stack(x.repeat(len(paths), 1, 1), routing=Routing("imitate", actions=actions))
    torch.testing.assert_close(out, apart_out)
    torch.testing.assert_close(trace.log_probs, apart_trace.log_probs)
    assert trace.paths() == [path for path in paths for _ in range(3)]  # block p runs path p
    prefixes = [{path[: path.index(i)] for path in paths if i in path} for i in range(8)]
    assert [seen[i] for i in range(8)] == [3 * len(p) for p in prefixes]  # 1, 1, 2, 4, 8, 15, 29, 56 per input


def test_jump_arithmetic_and_compute_fraction_of_a_fixed_path():
    stack = make_stack()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    _, trace = stack(x, routing=Routing("fixed", actions=path_to_actions([0, 3, 5], 6, 2)))
    assert trace.executed[0].tolist() == [True, False, False, True, False, True]
    assert trace.actions[0].tolist() == [2, -1, -1, 1, -1]
    flops = stack.layer_flops(5)
    full = stack.full_depth_flops(5)
    expected = (full - flops.sum() + flops[[0, 3, 5]].sum()) / full
    assert trace.compute_fraction[0].item() == pytest.approx(expected.item())
    _, trace = stack(x, routing="full")
    assert trace.compute_fraction.tolist() == [1.0, 1.0]
    assert trace.layers_executed.tolist() == [6, 6]


def test_policy_flops_count_toward_compute():
    stack = make_stack()
    x = torch.randn(1, 5, 16, dtype=torch.float64)
    _, trace = stack(x, routing=Routing("fixed", actions=torch.zeros(5, dtype=torch.long)))
    assert trace.compute_fraction.item() == 1.0  # fixed: the policy never ran
    stack.policy.net[2].bias.data = torch.tensor([100.0, 0.0, 0.0], dtype=torch.float64)  # never jump
    _, trace = stack(x, routing="greedy")
    assert trace.layers_executed.item() == 6
    expected = 1 + 4 * stack.policy.flops(5) / stack.full_depth_flops(5)  # decisions after layers 0-3, not 4
    assert trace.compute_fraction.item() == pytest.approx(expected)


def test_policy_dropout_perturbs_training_decisions_only():
    stack = make_stack(policy_dropout=0.5)
    plain = make_stack()  # the same seed, so the same weights
    states = torch.randn(64, 16, dtype=torch.float64)
    stack.train()
    assert not torch.allclose(stack.policy(states, 1), stack.policy(states, 1))
    stack.eval()
    plain.eval()
    torch.testing.assert_close(stack.policy(states, 1), plain.policy(states, 1))
    with pytest.raises(ConfigError, match="policy_dropout: got 1"):
        make_stack(policy_dropout=1.0)
    with pytest.raises(ConfigError, match="model.policy_dropout: the exact estimator"):
        from_dict({}, ["model.policy_dropout=0.2", "agent.estimator=exact"])
    with pytest.raises(ConfigError, match="model.policy_dropout: the self_critical baseline"):
        from_dict({}, ["model.policy_dropout=0.2", "agent.baseline=self_critical"])
    with pytest.raises(ConfigError, match="policy_dropout: the policy reads no state"):
        make_stack(policy_dropout=0.2, policy_state=False)


def test_random_routing_extremes():
    stack = make_stack()
    x = torch.randn(16, 3, 16, dtype=torch.float64)
    _, trace = stack(x, routing=Routing("random", p=0.0))
    assert (trace.layers_executed == 6).all()
    _, trace = stack(x, routing=Routing("random", p=1.0))
    assert trace.paths() == [(0, 3, 5)] * 16  # p = 1: every decision takes the longest distinct jump
    assert trace.actions[0].tolist() == [2, -1, -1, 1, -1]


@pytest.mark.parametrize("inputs", ["input", "state"])
def test_reinforce_loss_reaches_the_policy_only(inputs):
    stack = make_stack(policy_inputs=inputs)
    _, trace = stack(torch.randn(6, 4, 16, dtype=torch.float64), routing="sample")
    advantage = torch.randn(6, dtype=torch.float64)
    loss = -(advantage * trace.log_probs).mean() - 0.01 * trace.entropy.mean()
    loss.backward()
    policy_grads = [p.grad for p in stack.policy.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in policy_grads)
    assert all(p.grad is None for p in stack.network_parameters())


def test_eval_mode_is_greedy_and_deterministic():
    stack = make_stack().eval()
    x = torch.randn(5, 4, 16, dtype=torch.float64)
    first, first_trace = stack(x)
    second, _ = stack(x)
    torch.testing.assert_close(first, second)
    greedy, greedy_trace = stack(x, routing="greedy")
    torch.testing.assert_close(first, greedy)
    assert torch.equal(first_trace.actions, greedy_trace.actions)


def test_curriculum_forces_early_decisions_to_run_the_next_layer():
    stack = make_stack()
    _, trace = stack(torch.randn(8, 3, 16, dtype=torch.float64), routing=Routing("sample", first_decision=3))
    assert trace.executed[:, :4].all()
    assert (trace.actions[:, :3] == 0).all()


def test_update_threshold_follows_the_previous_loss():
    stack = make_stack()
    start = stack.thresholds()
    stack.update_threshold(1.0)
    assert stack.thresholds() == start  # nothing to compare with yet
    stack.update_threshold(2.0)  # worse: lower thresholds, update more tokens
    assert stack.thresholds() == pytest.approx([t - 0.01 for t in start])
    stack.update_threshold(1.5)  # better: raise them again
    assert stack.thresholds() == pytest.approx(start)


def test_paths_enumeration_and_actions_round_trip():
    paths = enumerate_paths(6, 2)
    assert paths[0] == (0, 2, 5) and paths[-1] == (0, 1, 2, 3, 4, 5)
    assert len(paths) == len(set(paths))
    stack = make_stack()
    x = torch.randn(1, 3, 16, dtype=torch.float64)
    for path in paths:
        _, trace = stack(x, routing=Routing("fixed", actions=path_to_actions(path, 6, 2)))
        assert trace.paths() == [path]
    with pytest.raises(ValueError, match="cannot go from layer 0 to 4"):
        path_to_actions([0, 4, 5], 6, 2)


@pytest.mark.parametrize(
    ("x", "mask", "message"),
    [
        (torch.randn(4, 16, dtype=torch.float64), None, r"shape \(batch, tokens, 16\)"),
        (torch.randn(2, 4, 15, dtype=torch.float64), None, r"shape \(batch, tokens, 16\)"),
        (torch.randn(2, 4, 16, dtype=torch.float32), None, "dtype torch.float64"),
        (torch.randint(0, 3, (2, 4, 16)), None, "dtype torch.float64"),
        (torch.randn(0, 4, 16, dtype=torch.float64), None, "non-empty"),
        (torch.randn(2, 4, 16, dtype=torch.float64), torch.ones(2, 5, dtype=torch.bool), "mask of shape"),
        (torch.randn(2, 4, 16, dtype=torch.float64), torch.ones(2, 4), "mask of shape"),
        (torch.randn(2, 4, 16, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.bool), "no real token"),
        ([[1.0]], None, "got list"),
    ],
)
def test_bad_input_raises_a_clear_value_error(x, mask, message):
    with pytest.raises(ValueError, match=message):
        make_stack()(x, mask)


def test_bad_routing_raises():
    stack = make_stack()
    x = torch.randn(2, 3, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="routing mode"):
        stack(x, routing="teleport")
    with pytest.raises(ValueError, match="fixed routing needs actions"):
        stack(x, routing=Routing("fixed", actions=torch.zeros(3, dtype=torch.long)))
    with pytest.raises(ValueError, match="0 <= p <= 1"):
        stack(x, routing=Routing("random", p=1.5))
    with pytest.raises(ValueError, match="explore must be in"):
        stack(x, routing=Routing("sample", explore=1.0))
    with pytest.raises(ValueError, match="samples must be 1, or more with sample or imitate routing; got 2 with gre"):
        stack(x, routing=Routing("greedy", samples=2))
    with pytest.raises(ValueError, match="full_depth_copy needs sample routing, got greedy routing"):
        stack(x, routing=Routing("greedy", full_depth_copy=True))


def test_seed_compatible_skip_layer_keeps_logs_per_sample():
    torch.manual_seed(0)
    model = skip_layer(32, 4, 6, mini_hc=True, hc_expansion_rate=3)
    out = model(torch.randn(3, 7, 32), xa=None, mask=None)
    assert out.shape == (3, 7, 32)
    assert len(model.logs["jumps"]) == 3
    assert model.policy.inputs == "input" and model.layers[0].attention is None
    model.policy.net[2].bias.data = torch.tensor([-100.0, 50.0, 100.0])  # always the longest jump
    model(torch.randn(3, 7, 32))
    assert model.logs["jumps"] == [[3, 5]] * 3  # 0 -> 3 -> 5: jumps over 1, 2 and 4


def test_seed_example_script_prints_both_shapes():
    result = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "seed_example.py")], capture_output=True, text=True, check=True
    )
    assert result.stdout.count("torch.Size([4, 128, 512])") == 2


def test_a_jump_clamped_at_the_end_skips_nothing_and_mixes_nothing():
    stack = make_stack()
    x = torch.randn(1, 4, 16, dtype=torch.float64)
    outputs = []
    for last_action in (0, 1, 2):  # after layer 4 every action lands on layer 5
        actions = torch.tensor([0, 0, 0, 0, last_action])
        out, trace = stack(x, routing=Routing("fixed", actions=actions))
        outputs.append(out)
        assert trace.paths() == [(0, 1, 2, 3, 4, 5)]
        assert trace.jumps() == [[]]
    torch.testing.assert_close(outputs[1], outputs[0])
    torch.testing.assert_close(outputs[2], outputs[0])
    with pytest.raises(ValueError, match=r"long values in \[-1, 2\]"):
        stack(x, routing=Routing("fixed", actions=torch.tensor([0, 0, 0, -7, 0])))


def test_the_jump_mix_gets_a_zero_gradient_not_none_when_no_row_jumps():
    # AdamW skips a parameter without a gradient, and still moves one with a zero gradient (momentum,
    # weight decay): a training pass in which no row jumps must leave the mix's weights a zero gradient,
    # as the mix with weight 0 does, or training would change with whether a batch happened to jump.
    stack = make_stack()
    stack.policy.net[2].bias.data = torch.tensor([100.0, -100.0, -100.0], dtype=torch.float64)  # never jump
    out, trace = stack(torch.randn(4, 3, 16, dtype=torch.float64), routing=Routing("sample"))
    assert int((trace.actions > 0).sum()) == 0
    out.square().sum().backward()
    for p in (stack.jump_weights, stack.work_memory_gate[0].weight):
        assert p.grad is not None and not p.grad.any()


def test_actions_that_land_on_the_same_layer_are_one_choice():
    # 8 layers, max_jump 3; policy probabilities [0.30, 0.233, 0.233, 0.233] after every layer.
    stack = tiny_stack(num_layers=8, max_jump=3)
    probs = torch.tensor([0.30, 0.7 / 3, 0.7 / 3, 0.7 / 3], dtype=torch.float64)
    torch.nn.init.zeros_(stack.policy.net[2].weight)
    stack.policy.net[2].bias.data = probs.log()
    x = torch.randn(4000, 2, 16, dtype=torch.float64)
    with torch.no_grad():
        _, sampled = stack(x, routing=Routing("sample", first_decision=5))  # every sample reaches layer 5
        _, greedy = stack(x, routing=Routing("greedy", first_decision=5))
    # After layer 5 only "run layer 6" and "land on 7" differ: 0.30 against 0.70 / 3.
    assert set(sampled.actions[:, 5].tolist()) == {0, 1}
    skip_6 = float((~sampled.executed[:, 6]).float().mean())
    assert skip_6 == pytest.approx(float(probs[1] / probs[:2].sum()), abs=0.03)  # 0.44, not 0.70
    assert greedy.executed[:, 6].all()  # greedy agrees with the most likely landing
    # After layer 6 every action lands on 7: no decision, no policy call, no log-prob.
    assert (sampled.actions[:, 6] == -1).all()
    expected = torch.where(sampled.actions[:, 5] == 0, probs[0], probs[1]) / probs[:2].sum()
    torch.testing.assert_close(sampled.log_probs, expected.log())
    calls = 1  # one decision (after layer 5) per sample, whatever it chose
    compute = stack.compute_fraction(sampled.executed.double(), 2, calls * stack.policy.flops(2))
    torch.testing.assert_close(sampled.compute_fraction, compute)


def test_explore_puts_a_floor_under_every_action_and_logs_the_mixtures_probability():
    # A policy sure of "run the next layer" (probability ~1) in a stack of 4: after layer 0 three
    # distinct landings, after layer 1 two. With explore 0.4 a sample draws from
    # 0.6 * pi + 0.4 * uniform, so it skips layer 1 0.4 * 2/3 of the time; greedy never does.
    stack = tiny_stack(num_layers=4, max_jump=2)
    torch.nn.init.zeros_(stack.policy.net[2].weight)
    stack.policy.net[2].bias.data = torch.tensor([20.0, -20.0, -20.0], dtype=torch.float64)
    x = torch.randn(4000, 2, 16, dtype=torch.float64)
    with torch.no_grad():
        _, plain = stack(x, routing=Routing("sample"))
        _, explored = stack(x, routing=Routing("sample", explore=0.4))
        _, greedy = stack(x, routing=Routing("greedy", explore=0.4))
    assert plain.executed[:, 1].all() and greedy.executed[:, 1].all()
    assert float((~explored.executed[:, 1]).float().mean()) == pytest.approx(0.4 * 2 / 3, abs=0.03)
    expected = torch.zeros(len(x), dtype=torch.float64)
    for layer, choices in ((0, 3), (1, 2)):
        a = explored.actions[:, layer]
        p = torch.where(a == 0, 0.6 + 0.4 / choices, 0.4 / choices).double()
        expected += torch.where(a >= 0, p.log(), 0.0)
    torch.testing.assert_close(explored.log_probs, expected, atol=1e-6, rtol=0)

    def entropy(p: list[float]) -> float:
        return float(-(torch.tensor(p) * torch.tensor(p).log()).sum())

    h0, h1 = entropy([0.6 + 0.4 / 3, 0.4 / 3, 0.4 / 3]), entropy([0.8, 0.2])  # the mixtures'
    mean_entropy = torch.where(explored.actions[:, 1] >= 0, (h0 + h1) / 2, h0).double()
    torch.testing.assert_close(explored.entropy, mean_entropy, atol=1e-5, rtol=0)
    _, trace = stack(x[:8], routing=Routing("sample", explore=0.4))
    trace.log_probs.sum().backward()
    assert stack.policy.net[2].bias.grad.abs().sum() > 0  # the mixture's log-probs reach the policy


def test_the_networks_initial_weights_do_not_depend_on_the_policys_design():
    from conftest import tiny_trainer

    plain = dict(tiny_trainer().model.named_parameters())
    other = dict(tiny_trainer("model.policy_confidence=true", "model.policy_hidden=8").model.named_parameters())
    network = [name for name in plain if ".policy." not in name]
    assert network and all(torch.equal(plain[name], other[name]) for name in network)
    assert plain["stack.policy.net.0.weight"].shape != other["stack.policy.net.0.weight"].shape
