"""Greedy decoding with a price per skipped layer, and the price that meets a compute budget."""

import json

import pytest
import reprice
import torch
from conftest import tiny_config
from test_trainer import run_train

from skipjump.budget import STEPS, WIDEST, calibrate, greedy_compute
from skipjump.checkpoint import CheckpointError, load_module_state
from skipjump.config import ConfigError, validate
from skipjump.evaluate import subsample
from skipjump.runs import load_run, load_trained
from skipjump.stack import Routing
from skipjump.trainer import build


@pytest.mark.parametrize("price, action", [(0.0, 0), (-0.1, 0), (0.4, 0), (0.6, 2)])
def test_greedy_picks_the_action_whose_logit_plus_price_times_layers_skipped_is_largest(make_stack, price, action):
    stack = make_stack(num_layers=6, max_jump=2).eval()
    with torch.no_grad():  # the same logits [1, 0, 0] at every decision, whatever the state
        for layer in stack.policy.net:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
        stack.policy.net[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
        stack.policy.greedy_price.fill_(price)  # scores 1, 0 + price, 0 + 2 * price
        _, trace = stack(torch.randn(3, 4, 16, dtype=torch.float64), routing=Routing("greedy"))
    assert trace.actions[:, 0].tolist() == [action] * 3
    assert bool((trace.compute_fraction < 1).all()) == (action > 0)


# the tiny stack's longest jumps cost 0.59; untrained, greedy spends 0.81 unpriced: 0.9 needs a price < 0
@pytest.mark.parametrize("budget", [0.65, 0.8, 0.9])
def test_calibrate_leaves_the_price_where_greedy_spends_the_most_compute_within_the_budget(budget):
    trainer = build(tiny_config())
    model, task = trainer.model.train(), trainer.task  # in training mode, as train.py leaves it
    rows = subsample(task.train, 300, 0)
    routing = Routing("greedy")
    before = greedy_compute(model, task, rows, 0.0, routing, 512)
    result = calibrate(model, task, rows, budget)
    price = float(model.stack.policy.greedy_price)
    assert result["price"] == price and result["compute_before"] == before
    assert result["compute_after"] <= budget and result["met"]
    assert (price < 0) == (before < budget)
    assert greedy_compute(model, task, rows, price, routing, 512) == result["compute_after"]
    step = 2 * WIDEST / 2**STEPS  # past the bisection's resolution, toward cheaper skipping: over budget
    assert greedy_compute(model, task, rows, price - step, routing, 512) > budget
    assert model.training  # calibrate runs in eval mode and gives the mode back


def test_calibrate_without_fill_only_caps_greedy_compute():
    trainer = build(tiny_config())  # untrained, greedy spends 0.81 unpriced (above)
    model, task = trainer.model, trainer.task
    rows = subsample(task.train, 300, 0)
    within = calibrate(model, task, rows, 0.9, fill=False)
    assert within["price"] == 0.0 == float(model.stack.policy.greedy_price)
    assert within["compute_after"] == within["compute_before"] < 0.9 and within["met"]
    capped = calibrate(model, task, rows, 0.65, fill=False)
    assert capped == calibrate(model, task, rows, 0.65)  # over the budget, a cap prices as fill does
    assert capped["price"] > 0 and capped["compute_after"] <= 0.65


def test_calibrate_says_when_greedy_cannot_meet_the_budget():
    trainer = build(tiny_config())
    result = calibrate(trainer.model, trainer.task, subsample(trainer.task.train, 300, 0), 0.3)
    assert not result["met"] and result["compute_after"] > 0.3 and result["price"] == WIDEST


def test_training_decodes_unpriced_and_a_finished_trainer_keeps_its_price():
    trainer = build(tiny_config())
    price = trainer.model.stack.policy.greedy_price
    price.fill_(1.5)
    trainer.train(trainer.step)  # nothing left to train: the price stays
    assert float(price) == 1.5
    trainer.train(trainer.step + 1)  # a resumed run trains on: the price was the finished policy's
    assert float(price) == 0.0


def test_calibrate_refuses_a_budget_outside_0_1():
    trainer = build(tiny_config())
    with pytest.raises(ValueError, match="budget must be in"):
        calibrate(trainer.model, trainer.task, trainer.task.test, 0.0)
    with pytest.raises(ConfigError, match="agent.greedy_budget"):
        validate(tiny_config("agent.greedy_budget=1.5"))


def test_a_checkpoint_from_before_the_price_loads_with_plain_argmax_and_a_new_one_keeps_its_price():
    model = build(tiny_config()).model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["stack.policy.greedy_price"].fill_(1.5)
    load_module_state(model, state, "new.pt", "the model")
    assert float(model.stack.policy.greedy_price) == 1.5
    del state["stack.policy.greedy_price"]
    fresh = build(tiny_config()).model
    load_module_state(fresh, state, "old.pt", "the model")
    assert float(fresh.stack.policy.greedy_price) == 0.0
    del state["stack.policy.net.0.bias"]  # any other missing tensor is still refused
    with pytest.raises(CheckpointError, match="missing"):
        load_module_state(fresh, state, "broken.pt", "the model")


def test_a_run_with_a_greedy_budget_calibrates_before_its_evaluation_and_reprice_redoes_it(tmp_path, capsys):
    # a curriculum: the run's last first decision (0) differs from a fresh trainer's (1)
    run_dir = run_train(tmp_path, "priced", "agent.greedy_budget=0.7", "trainer.curriculum_steps=5")
    summary = json.loads((run_dir / "summary.json").read_text())
    priced = summary["greedy"]["price"]
    assert priced["compute_after"] <= 0.7
    checkpoint = run_dir / "checkpoints" / "last.pt"
    assert float(torch.load(checkpoint, weights_only=True)["model"]["stack.policy.greedy_price"]) == priced["price"]
    _, _, model = load_run(run_dir)
    assert float(model.stack.policy.greedy_price) == priced["price"]
    trainer, state = load_trained(run_dir)
    assert trainer.policy_updates == state["policy_updates"] == 10 and trainer.first_decision() == 0

    saved = checkpoint.read_bytes()
    out = tmp_path / "reprice.md"
    assert reprice.main([str(run_dir), "--budgets", "0.7", "0.9", "--out", str(out)]) == 0
    assert checkpoint.read_bytes() == saved  # the run directory is only read
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith(f"| {run_dir}")]
    assert [row[1] for row in rows] == ["0.70", "0.90"]
    assert rows[0][2] == f"{priced['price']:+.3f}"  # its own budget: the run's own price and evaluation
    greedy = summary["greedy"]
    assert rows[0][3] == f"{100 * greedy['accuracy']:.2f}%" and rows[0][8] == f"{100 * greedy['compute_fraction']:.2f}%"
    assert float(rows[1][8].rstrip("%")) >= float(rows[0][8].rstrip("%"))  # a larger budget spends no less here
    assert reprice.main([str(tmp_path / "missing"), "--budgets", "0.5"]) == 2
    with pytest.raises(SystemExit):
        reprice.main([str(run_dir), "--budgets", "1.5"])
    assert "a budget is a compute fraction in (0, 1], got 1.5" in capsys.readouterr().err


def test_a_run_that_caps_greedy_keeps_price_0_within_its_budget_and_reprice_caps_it_too(tmp_path):
    run_dir = run_train(tmp_path, "capped", "agent.greedy_budget=1.0", "agent.greedy_fill=false")
    priced = json.loads((run_dir / "summary.json").read_text())["greedy"]["price"]
    assert priced["price"] == 0.0 and priced["compute_after"] == priced["compute_before"] <= 1.0
    out = tmp_path / "reprice.md"
    assert reprice.main([str(run_dir), "--budgets", "1.0", "--out", str(out)]) == 0
    row = next(line.split(" | ") for line in out.read_text().splitlines() if line.startswith(f"| {run_dir}"))
    assert row[2] == "+0.000"  # filled to a budget of 1.0, the price would fall until greedy ran full depth
