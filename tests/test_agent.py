import pytest
import torch
from conftest import tiny_stack

from skipjump import JumpStack, Routing, StackConfig
from skipjump.agent import ReinforceAgent, decision_advantages
from skipjump.config import AgentConfig
from skipjump.paths import enumerate_paths, paths_to_actions
from skipjump.reward import jump_reward
from skipjump.stack import JumpTrace


def fake_trace(compute: list[float]) -> JumpTrace:
    b = len(compute)
    return JumpTrace(
        actions=torch.zeros(b, 3, dtype=torch.long),
        executed=torch.ones(b, 4, dtype=torch.bool),
        log_probs=torch.zeros(b),
        entropy=torch.zeros(b),
        layers_executed=torch.full((b,), 4),
        compute_fraction=torch.tensor(compute),
        features=torch.zeros(b, 8),
    )


def test_compute_minus_loss_reward():
    trace = fake_trace([1.0, 0.5, 0.25])
    loss = torch.tensor([0.1, 0.2, 2.0])
    reward = jump_reward(trace, loss, lam=2.0)
    torch.testing.assert_close(reward, torch.tensor([0.0 - 0.1, 1.0 - 0.2, 1.5 - 2.0]))


def test_blockdrop_reward():
    trace = fake_trace([1.0, 0.5, 0.5])
    correct = torch.tensor([True, True, False])
    reward = jump_reward(trace, torch.zeros(3), correct, kind="blockdrop", gamma=7.0)
    torch.testing.assert_close(reward, torch.tensor([0.0, 0.75, -7.0]))
    with pytest.raises(ValueError, match="correctness"):
        jump_reward(trace, torch.zeros(3), kind="blockdrop")
    with pytest.raises(ValueError, match="reward kind"):
        jump_reward(trace, torch.zeros(3), kind="nope")


def agent(baseline: str, **kw) -> ReinforceAgent:
    return ReinforceAgent(AgentConfig(baseline=baseline, **kw), dims=8)


def test_leave_one_out_advantage_has_mean_zero_and_excludes_itself():
    torch.manual_seed(0)
    k, b = 4, 5
    rewards = torch.randn(k * b)
    advantages, _ = agent("leave_one_out", samples=k).advantages(rewards)
    grouped, adv = rewards.view(k, b), advantages.view(k, b)
    torch.testing.assert_close(adv.mean(dim=0), torch.zeros(b), atol=1e-6, rtol=0)
    expected_first = grouped[0, 0] - grouped[1:, 0].mean()
    torch.testing.assert_close(adv[0, 0], expected_first)


def test_decision_advantages_compare_with_the_paths_that_reached_the_same_state():
    # three paths of one input: 0 and 1 agree until their last decision, 2 parts at the first
    actions = torch.tensor([[0, 1, 0], [0, 1, 1], [1, 0, 0]])
    rewards = torch.tensor([1.0, 0.0, 3.0])
    expected = torch.tensor([[1 - 1.5, 1 - 0.0, 1 - 0.0], [0 - 2.0, 0 - 1.0, 0 - 1.0], [3 - 0.5, 3 - 0.5, 3 - 0.5]])
    torch.testing.assert_close(decision_advantages(rewards, actions, samples=3), expected)
    # two inputs side by side (K blocks of B = 2 rows): each input's paths are compared only with its own
    both = decision_advantages(rewards.repeat_interleave(2), actions.repeat_interleave(2, dim=0), samples=3)
    torch.testing.assert_close(both, expected.repeat_interleave(2, dim=0))


def test_decision_credit_is_path_credit_when_paths_part_at_the_first_decision():
    torch.manual_seed(0)
    stack = JumpStack(StackConfig(dims=8, num_layers=5, max_jump=3, heads=2, memory_slots=4, policy_hidden=8))
    _, trace = stack(torch.randn(4, 3, 8), routing="sample")
    torch.testing.assert_close(trace.decision_log_probs.sum(dim=1), trace.log_probs)
    assert (trace.decision_log_probs[trace.actions < 0] == 0).all()
    # four paths of one input, each decision with a log-prob of its own
    trace.decision_log_probs = torch.randn(4, 4)
    trace.log_probs = trace.decision_log_probs.sum(dim=1)
    trace.actions = torch.tensor([[0, 0, 0, -1], [1, 0, 1, -1], [2, 1, 0, -1], [3, 1, 1, -1]])
    rewards = torch.tensor([0.5, -1.0, 2.0, 0.25])
    path, _ = agent("leave_one_out", samples=4).loss(trace, rewards)
    decision, _ = agent("leave_one_out", samples=4, credit="decision").loss(trace, rewards)
    torch.testing.assert_close(decision, path)
    trace.actions[:, 0] = 0  # now they share the first decision: later ones are judged apart
    decision, _ = agent("leave_one_out", samples=4, credit="decision").loss(trace, rewards)
    assert not torch.allclose(decision, path)
    for baseline in ("none", "moving_average", "value"):  # one baseline per path: every decision shares it
        trace.features = torch.randn(4, 8)
        losses = []
        for credit in ("path", "decision"):
            torch.manual_seed(1)  # the same value head
            losses.append(agent(baseline, credit=credit).loss(trace, rewards)[0])
        torch.testing.assert_close(losses[1], losses[0])
    trace.decision_log_probs = None  # a trace built outside a stack (the Gymnasium environment's)
    with pytest.raises(ValueError, match="decision_log_probs"):
        agent("leave_one_out", samples=4, credit="decision").loss(trace, rewards)


def test_moving_average_uses_the_baseline_from_before_the_update():
    a = agent("moving_average", momentum=0.5)
    first, _ = a.advantages(torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(first, torch.tensor([-1.0, 1.0]))  # first batch: its own mean
    second, _ = a.advantages(torch.tensor([4.0, 6.0]))
    torch.testing.assert_close(second, torch.tensor([2.0, 4.0]))  # b = 2 from before
    assert float(a.running_reward) == pytest.approx(0.5 * 2.0 + 0.5 * 5.0)


def test_self_critical_and_none():
    rewards = torch.tensor([1.0, 2.0])
    sc, _ = agent("self_critical").advantages(rewards, greedy_rewards=torch.tensor([0.5, 3.0]))
    torch.testing.assert_close(sc, torch.tensor([0.5, -1.0]))
    with pytest.raises(ValueError, match="greedy"):
        agent("self_critical").advantages(rewards)
    none, _ = agent("none").advantages(rewards)
    torch.testing.assert_close(none, rewards)


def test_value_baseline_learns_the_reward():
    torch.manual_seed(0)
    a = agent("value")
    features = torch.randn(32, 8)
    rewards = features[:, 0] * 2.0
    optimizer = torch.optim.Adam(a.parameters(), lr=1e-2)
    losses = []
    for _ in range(200):
        advantages, value_loss = a.advantages(rewards, features=features)
        optimizer.zero_grad()
        value_loss.backward()
        optimizer.step()
        losses.append(float(value_loss.detach()))
    assert losses[-1] < 0.05 * losses[0]
    assert advantages.abs().mean() < 0.3 * rewards.abs().mean()


def test_policy_loss_normalises_advantages_but_logs_their_raw_spread():
    stack = JumpStack(StackConfig(dims=8, num_layers=4, max_jump=2, heads=2, memory_slots=4, policy_hidden=8))
    _, trace = stack(torch.randn(6, 3, 8), routing="sample")
    rewards = torch.arange(6.0) * 10
    loss, stats = agent("none", entropy_coef=0.0).loss(trace, rewards)
    assert stats["policy/advantage_std"] == pytest.approx(float(rewards.std()))
    normalised = (rewards - rewards.mean()) / rewards.std()
    torch.testing.assert_close(loss, -(normalised * trace.log_probs).mean())
    raw, _ = agent("none", entropy_coef=0.0, normalize_advantage=False).loss(trace, rewards)
    torch.testing.assert_close(raw, -(rewards * trace.log_probs).mean())
    loss.backward()
    assert stack.policy.net[0].weight.grad.abs().sum() > 0


def learn(skip_penalty: float, steps: int = 150, lr: float = 0.05, **agent_options) -> float:
    """Train only the policy of a small stack on a synthetic loss; return mean layers run (greedy).

    The mean compute fraction and policy entropy of the sampled paths over the last 50 steps are
    left on ``learn.compute`` and ``learn.entropy``.
    """
    torch.manual_seed(0)
    stack = JumpStack(StackConfig(dims=8, num_layers=6, max_jump=2, heads=2, memory_slots=4, policy_hidden=16))
    options = {"baseline": "moving_average", "lam": 1.0, "entropy_coef": 0.0, "target_compute": None, **agent_options}
    reinforce = ReinforceAgent(AgentConfig(**options), dims=8)
    optimizer = torch.optim.Adam(stack.policy.parameters(), lr=lr)
    x = torch.randn(32, 4, 8)
    sampled_compute, entropy = [], []
    for _ in range(steps):
        _, trace = stack(x, routing="sample")
        skipped = (6 - trace.layers_executed).float()
        loss = skip_penalty * skipped  # the synthetic task loss: free, or ruined by each skip
        rewards = jump_reward(trace, loss, lam=float(reinforce.lam))
        policy_loss, _ = reinforce.loss(trace, rewards)
        reinforce.adapt_lam(trace.compute_fraction)
        reinforce.adapt_entropy_coef(trace.entropy.detach())
        sampled_compute.append(float(trace.compute_fraction.mean()))
        entropy.append(float(trace.entropy.detach().mean()))
        optimizer.zero_grad()
        policy_loss.backward()
        optimizer.step()
    _, trace = stack(x, routing=Routing("greedy"))
    learn.compute = sum(sampled_compute[-50:]) / 50
    learn.entropy = sum(entropy[-50:]) / 50
    return float(trace.layers_executed.float().mean())


def test_the_policy_learns_to_jump_when_jumping_is_free():
    assert learn(skip_penalty=0.0) <= 3.5  # the shortest paths run 3 layers


def test_the_policy_learns_not_to_jump_when_jumping_ruins_the_loss():
    assert learn(skip_penalty=1.0) >= 5.5  # full depth is 6


def test_adapt_lam_is_dual_ascent_towards_the_target_compute():
    agent = ReinforceAgent(AgentConfig(lam=0.5, target_compute=0.5, lam_lr=0.1), dims=8)
    agent.adapt_lam(torch.tensor([0.6, 0.8]))  # over budget by 0.2: compute must cost more
    assert float(agent.lam) == pytest.approx(0.5 + 0.1 * 0.2)
    agent.adapt_lam(torch.tensor([0.0, 0.0]))  # far under budget: lam falls, but never below 0
    assert float(agent.lam) == pytest.approx(0.52 - 0.05)
    for _ in range(20):
        agent.adapt_lam(torch.tensor([0.0]))
    assert float(agent.lam) == 0.0
    fixed = ReinforceAgent(AgentConfig(lam=0.3, target_compute=None), dims=8)  # no target: lam is the config's, always
    fixed.adapt_lam(torch.tensor([1.0]))
    assert float(fixed.lam) == pytest.approx(0.3)


def test_a_compute_target_makes_the_policy_skip_even_when_skipping_costs_loss():
    # Each skip costs 0.02 loss and compute starts free (lam = 0): without a target the policy
    # runs every layer; with target 0.6 lam rises until the policy skips down to the budget.
    assert learn(skip_penalty=0.02, steps=300, lam=0.0) >= 5.5
    learn(skip_penalty=0.02, steps=300, lam=0.0, target_compute=0.6, lam_lr=0.5)
    assert 0.45 <= learn.compute <= 0.65


def test_adapt_entropy_coef_is_dual_ascent_towards_the_target_entropy():
    agent = ReinforceAgent(AgentConfig(entropy_coef=0.1, target_entropy=0.5, entropy_lr=0.2), dims=8)
    agent.adapt_entropy_coef(torch.tensor([0.1, 0.3]))  # 0.3 below the target: explore more
    assert float(agent.entropy_coef) == pytest.approx(0.1 + 0.2 * 0.3)
    for _ in range(20):
        agent.adapt_entropy_coef(torch.tensor([1.2]))  # above it: the coefficient falls, never below 0
    assert float(agent.entropy_coef) == 0.0
    assert "entropy_coef" in agent.state_dict()  # adapted: state a checkpoint must keep
    fixed = ReinforceAgent(AgentConfig(entropy_coef=0.1), dims=8)
    fixed.adapt_entropy_coef(torch.tensor([0.0]))
    assert float(fixed.entropy_coef) == pytest.approx(0.1)
    assert "entropy_coef" not in fixed.state_dict()  # fixed: config, so older checkpoints still load


def test_an_entropy_target_keeps_the_policy_exploring():
    # Under a compute target the policy settles on which layers to skip and its entropy collapses;
    # with an entropy target the coefficient rises until the entropy per decision holds near it,
    # and the compute target still holds. (Integral control of a coefficient the optimiser's momentum
    # lags behind: the entropy swings around the target, hence the wide band.)
    budget = {"skip_penalty": 0.02, "steps": 300, "lr": 0.01, "lam": 0.0, "target_compute": 0.6, "lam_lr": 0.5}
    learn(**budget)
    assert learn.entropy < 0.15
    learn(**budget, target_entropy=0.4, entropy_lr=0.1)
    assert 0.25 <= learn.entropy <= 0.75
    assert 0.5 <= learn.compute <= 0.7


@pytest.mark.parametrize("first_decision", [0, 2])
def test_the_exact_loss_is_the_gradient_of_the_expected_reward_over_every_path(first_decision):
    stack = tiny_stack(num_layers=6, max_jump=2)
    table = paths_to_actions(enumerate_paths(6, 2), 6, 2)
    table = table[(table[:, :first_decision] <= 0).all(dim=1)]  # what the curriculum leaves (as Updates does)
    paths, x = len(table), torch.randn(4, 3, 16, dtype=torch.float64)
    every = Routing("imitate", actions=table.repeat_interleave(4, dim=0), samples=paths, first_decision=first_decision)
    _, trace = stack(x, routing=every)
    probs = trace.log_probs.view(paths, 4).exp()
    torch.testing.assert_close(probs.sum(dim=0), torch.ones(4, dtype=torch.float64))  # every outcome, once
    rewards = torch.randn(paths * 4, dtype=torch.float64)
    agent = ReinforceAgent(AgentConfig(estimator="exact", entropy_coef=0.0), dims=16)
    loss, stats, weights = agent.exact_loss(trace, rewards, paths)
    params = list(stack.policy.parameters())
    grads = torch.autograd.grad(loss, params, retain_graph=True)
    r = rewards.view(paths, 4)
    expected = (probs * r).sum(dim=0)  # E_pi[r] per input, differentiated directly
    scale = (probs.detach() * (r - expected.detach()).square()).sum(dim=0).mean().sqrt()
    for g, reference in zip(grads, torch.autograd.grad(-expected.mean() / scale, params)):
        torch.testing.assert_close(g, reference)
    assert stats["policy/reward"] == pytest.approx(float(expected.detach().mean()))
    torch.testing.assert_close(weights, probs.detach())


def test_the_exact_estimator_learns_where_the_best_path_is_rare():
    # Only the all-longest-jumps path is rewarded. A near-greedy policy that rarely samples it
    # learns slowly from 4 samples; the exact loss sees it on every input from the first step.
    torch.manual_seed(0)
    stack = JumpStack(StackConfig(dims=8, num_layers=6, max_jump=2, heads=2, memory_slots=4, policy_hidden=16))
    with torch.no_grad():
        stack.policy.net[-1].bias.copy_(torch.tensor([4.0, 0.0, 0.0]))  # jumps sampled ~2% of the time
    table = paths_to_actions(enumerate_paths(6, 2), 6, 2)
    agent = ReinforceAgent(AgentConfig(estimator="exact", entropy_coef=0.0, target_compute=None), dims=8)
    optimizer = torch.optim.Adam(stack.policy.parameters(), lr=0.05)
    x = torch.randn(8, 4, 8)
    for _ in range(40):
        _, trace = stack(x, routing=Routing("imitate", actions=table.repeat_interleave(8, dim=0), samples=len(table)))
        rewards = (trace.layers_executed == 3).double()  # the shortest paths run 3 layers
        loss, _, _ = agent.exact_loss(trace, rewards, len(table))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _, trace = stack(x, routing=Routing("greedy"))
    assert (trace.layers_executed == 3).all()
