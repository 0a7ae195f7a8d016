"""Imitation of oracle paths: the imitate routing, the oracle's labels and the trainer's warm start."""

import torch
from conftest import tiny_stack, tiny_trainer
from torch.distributions import Categorical

from skipjump.path_scores import oracle_actions
from skipjump.paths import path_to_actions
from skipjump.stack import Routing


def test_imitate_follows_the_given_path_and_scores_it_under_the_policy():
    stack = tiny_stack(num_layers=6, max_jump=2)
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    actions = torch.stack([path_to_actions(p, 6, 2) for p in [(0, 3, 5), (0, 1, 2, 3, 4, 5), (0, 2, 5)]])
    _, fixed = stack(x, routing=Routing("fixed", actions=actions))
    _, imitated = stack(x, routing=Routing("imitate", actions=actions))
    assert torch.equal(imitated.executed, fixed.executed) and imitated.log_probs.requires_grad
    # three layers: one decision, after layer 0, between running layer 1 (0) and jumping to 2 (1)
    stack = tiny_stack(num_layers=3, max_jump=2)
    chosen = torch.tensor([1, 0, 1])
    _, trace = stack(x, routing=Routing("imitate", actions=torch.stack([chosen, torch.zeros(3).long()], dim=1)))
    logits = stack.policy(stack.layers[0](x).mean(dim=1), 0)[:, :2]
    expected = Categorical(logits=logits).log_prob(chosen)
    assert torch.allclose(trace.log_probs, expected) and trace.executed[:, 1].tolist() == [False, True, False]


def test_imitation_updates_teach_the_policy_a_path():
    trainer = tiny_trainer()
    inputs = trainer.task.train.inputs[:64]
    greedy = Routing("greedy")
    before = trainer.model(inputs, greedy)[1].executed.float().mean(dim=0)
    path = (0, 1, 2, 3) if before[1:3].sum() < 1.5 else (0, 3)  # teach what the untrained policy does not do
    for _ in range(60):
        trainer.updates.imitate(inputs, path_to_actions(path, 4, 2).expand(64, -1))
    after = trainer.model(inputs, greedy)[1].executed.float().mean(dim=0)
    expected = torch.zeros(4).index_fill_(0, torch.tensor(path), 1.0)
    assert not torch.equal(before, expected) and torch.equal(after, expected)


def test_oracle_actions_are_paths_within_the_budget():
    trainer = tiny_trainer("trainer.steps=40", "trainer.warmup_steps=39")
    trainer.train()
    split = trainer.task.train
    actions = oracle_actions(trainer.model, trainer.task, split, budget=0.6)
    assert actions.shape == (len(split), 3)
    _, trace = trainer.model(split.inputs, Routing("fixed", actions=actions))
    assert float(trace.compute_fraction.mean()) <= 0.6 + 1e-6
    unbounded = oracle_actions(trainer.model, trainer.task, split, budget=1.0)
    _, free = trainer.model(split.inputs, Routing("fixed", actions=unbounded))
    assert float(free.compute_fraction.mean()) > float(trace.compute_fraction.mean())


def test_the_warm_start_runs_once_before_the_first_policy_step(monkeypatch):
    trainer = tiny_trainer("trainer.imitation_steps=3", "trainer.imitation_rows=32")
    calls = []
    original = trainer.updates.imitate
    monkeypatch.setattr(trainer.updates, "imitate", lambda *a: (calls.append(a[1].shape), original(*a))[1])
    seen = []
    for _ in range(6):  # warm-up 2, then supervised / policy / supervised / policy
        stats, _ = trainer.train_step()
        seen.append("imitation/loss" in stats)
    assert seen == [False, False, False, True, False, False]
    assert len(calls) == 3 and calls[0] == (16, 3)
