"""The k-hop pointer task, the difficulty measures of its evaluation, and the policy's confidence probe."""

import json

import numpy as np
import pytest
import torch
from conftest import ROOT, tiny_trainer

from skipjump.config import ConfigError, from_dict
from skipjump.evaluate import by_difficulty, fewest_layers, needed_layers, spearman
from skipjump.path_scores import PathScores
from skipjump.reward import jump_reward
from skipjump.runs import read_trace
from skipjump.stack import Routing
from skipjump.tasks import KHopTask, make_task
from skipjump.tasks.khop import follow

KHOP_CONFIG = str(ROOT / "skipjump" / "configs" / "khop.yaml")


def test_generated_samples_answer_the_pointer_chase_they_describe():
    task = KHopTask(seed=3, positions=6, max_hops=5, train_rows=300, test_rows=200)
    for split in (task.train, task.test, task.draw(100, step=7)):
        for row, target, k in zip(split.inputs.tolist(), split.targets.tolist(), split.difficulty.tolist()):
            perm, start, hops = row[:6], row[6], row[7]
            assert sorted(perm) == list(range(6)) and hops == k and 1 <= k <= 5
            position = start
            for _ in range(hops):
                position = perm[position]
            assert target == position
    assert set(task.test.difficulty.tolist()) == set(range(1, 6))


def test_follow_stops_each_row_after_its_own_hops():
    perm = torch.tensor([[1, 2, 3, 0], [1, 2, 3, 0]])
    assert follow(perm, torch.tensor([0, 0]), torch.tensor([1, 3])).tolist() == [1, 3]


def test_fresh_batches_depend_on_the_step_alone():
    a, b = KHopTask(seed=1, train_rows=50, test_rows=50), KHopTask(seed=1, train_rows=50, test_rows=50)
    assert torch.equal(a.draw(32, 5).inputs, b.draw(32, 5).inputs)
    assert not torch.equal(a.draw(32, 5).inputs, a.draw(32, 6).inputs)
    assert not torch.equal(a.draw(32, 5).inputs, KHopTask(seed=2, train_rows=50, test_rows=50).draw(32, 5).inputs)
    assert torch.equal(a.test.inputs, b.test.inputs) and torch.equal(a.train.inputs, b.train.inputs)


def test_the_trainer_draws_a_fresh_batch_every_step():
    trainer = tiny_trainer("task.name=khop", "task.train_rows=64", "task.test_rows=64")
    seen = []
    trainer.task.draw = lambda rows, step: (seen.append(step), KHopTask.draw(trainer.task, rows, step))[1]
    for _ in range(3):
        trainer.train_step()
    assert seen == [0, 1, 2]
    assert trainer.policy_split is trainer.task.train  # the rows references are chosen on: never trained on


def test_khop_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="task.positions: got 1"):
        from_dict({}, ["task.name=khop", "task.positions=1"])
    with pytest.raises(ConfigError, match="task.max_hops: got 0"):
        from_dict({}, ["task.name=khop", "task.max_hops=0"])
    assert isinstance(make_task(from_dict({}, ["task.name=khop", "task.test_rows=8"]).task, 0), KHopTask)


def test_fewest_layers_counts_only_confident_right_answers():
    paths = [(0, 3), (0, 1, 3), (0, 2, 3), (0, 1, 2, 3)]
    # sample 0: solved by the 2-layer path; 1: right but unsure on short paths, sure at 3 layers;
    # 2: never solved (right by a lucky argmax at full depth only)
    loss = np.array([[0.1, 2.0, 3.0], [0.2, 0.9, 3.0], [0.3, 0.5, 3.0], [0.1, 0.1, 1.5]])
    scores = PathScores(paths, np.array([0.4, 0.6, 0.6, 1.0]), loss < 2.5, loss, np.exp(-loss), "all 4 paths")
    scores.correct[3, 2] = True
    assert fewest_layers(scores).tolist() == [2, 3, -1]


def test_needed_layers_reads_each_difficulty_off_its_samples():
    paths = [(0, 3), (0, 1, 3), (0, 1, 2, 3)]
    correct = np.array(
        [  # difficulty 1: the 2-layer path gets 19 of 20 (>= 95% of full depth's 20); difficulty 2: only full depth
            [True] * 19 + [False] + [True] * 5 + [False] * 15,
            [True] * 20 + [True] * 18 + [False] * 2,
            [True] * 20 + [True] * 20,
        ]
    )
    loss = np.where(correct, 0.1, 3.0)
    scores = PathScores(paths, np.array([0.5, 0.75, 1.0]), correct, loss, np.exp(-loss), "all 3 paths")
    assert needed_layers(scores, np.array([1] * 20 + [2] * 20)) == {"1": 2, "2": 4}
    assert needed_layers(scores, np.array([1] * 20 + [2] * 20), share=0.9) == {"1": 2, "2": 3}
    scores.correct[:, 20:] = False  # full depth answers none of difficulty 2: nothing is needed for nothing
    assert needed_layers(scores, np.array([1] * 20 + [2] * 20))["2"] is None


def test_spearman_matches_ranks_with_ties():
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    # ties take average ranks: x ranks 0.5 0.5 2 3, y ranks 0 1 2 3 -> Pearson of those
    expected = np.corrcoef([0.5, 0.5, 2, 3], [0, 1, 2, 3])[0, 1]
    assert spearman(np.array([1, 1, 2, 3]), np.array([1, 2, 3, 4])) == pytest.approx(expected)
    assert spearman(np.array([2, 2, 2]), np.array([1, 2, 3])) is None


def test_by_difficulty_groups_accuracy_and_layers():
    samples = {"layers_executed": np.array([2, 4, 6, 8]), "correct": np.array([True, False, True, True])}
    table = by_difficulty(samples, np.array([1, 1, 2, 2]))
    assert table["by_difficulty"]["1"] == {"samples": 2, "accuracy": 0.5, "layers_mean": 3.0}
    assert table["by_difficulty"]["2"]["layers_mean"] == 7.0
    assert table["spearman_layers_difficulty"] == pytest.approx(np.corrcoef([0, 1, 2, 3], [0.5, 0.5, 2.5, 2.5])[0, 1])


def test_bounded_rewards():
    trace = type("T", (), {"compute_fraction": torch.tensor([0.5, 0.5, 1.0])})()
    loss, correct = torch.tensor([0.1, 9.0, 9.0]), torch.tensor([True, False, False])
    capped = jump_reward(trace, loss, kind="compute_minus_loss", lam=1.0, loss_cap=2.0)
    assert capped.tolist() == pytest.approx([0.4, -1.5, -2.0])
    error = jump_reward(trace, loss, correct, kind="compute_minus_error", lam=1.0)
    assert error.tolist() == pytest.approx([0.5, -0.5, -1.0])
    with pytest.raises(ValueError, match="needs per-sample correctness"):
        jump_reward(trace, loss, kind="compute_minus_error")


def test_confidence_probe_feeds_the_policy_and_is_charged():
    model = tiny_trainer("task.name=khop", "task.test_rows=32", "model.policy_confidence=true").model
    inputs = KHopTask(seed=0, train_rows=8, test_rows=8).test.inputs
    calls = []
    original = model.probe
    model.probe = lambda h, mask=None: (calls.append(h.shape[0]), original(h, mask))[1]
    _, trace = model(inputs, Routing("sample"))
    decisions = (trace.actions >= 0).sum(dim=1)
    assert calls and sum(calls) == int(decisions.sum())  # once per decision, on the deciding rows
    features = original(torch.randn(5, 9, 16))
    assert features.shape == (5, 2) and bool(((features >= 0) & (features <= 1 + 1e-6)).all())
    stack, tokens = model.stack, inputs.shape[1] - 1  # P pointer tokens and one query token
    per_call = stack.policy.flops(tokens) + model.probe_flops(tokens)
    expected = stack.compute_fraction(trace.executed.float(), tokens, decisions.float() * per_call)
    assert model.probe_flops(tokens) > 0 and torch.allclose(trace.compute_fraction, expected)
    with pytest.raises(ValueError, match="pass a probe"):
        model.stack(model.embed(inputs), routing=Routing("sample"))
    with pytest.raises(ConfigError, match="policy_confidence: needs model.policy_inputs=state"):
        from_dict({}, ["model.policy_confidence=true", "model.policy_inputs=input"])


def test_a_policy_without_the_state_reads_only_the_layer_and_the_heads_confidence():
    policy = tiny_trainer("model.policy_state=false", "model.policy_confidence=true").model.stack.policy
    states, confidence = torch.randn(2, 16), torch.tensor([[0.9, 0.1], [0.3, 0.8]])
    same = policy(states, 1, confidence[:1].expand(2, -1))
    torch.testing.assert_close(same[0], same[1])  # two different states, one confidence: one decision
    assert not torch.allclose(policy(states, 1, confidence)[0], policy(states, 1, confidence)[1])
    with pytest.raises(ConfigError, match="policy_state: false needs model.policy_inputs=state"):
        from_dict({}, ["model.policy_state=false", "model.policy_inputs=input"])


def test_a_short_khop_run_writes_the_difficulty_fields(tmp_path, capsys):
    import depth_report
    import path_study
    import train

    overrides = [
        "model.dims=16",
        "model.heads=2",
        "model.memory_slots=8",
        "model.policy_hidden=16",
        "task.train_rows=128",
        "task.test_rows=128",
        "trainer.steps=6",
        "trainer.warmup_steps=2",
        "trainer.full_depth_steps=1",  # the config's two network stages and its policy stage, in 6 steps
        "trainer.batch_size=16",
        "trainer.eval_every=0",
    ]
    assert train.main(["--config", KHOP_CONFIG, "--run-dir", str(tmp_path / "run"), *overrides]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    greedy = summary["greedy"]
    assert set(greedy["by_difficulty"]) == {str(k) for k in range(1, 7)}
    assert {"samples", "accuracy", "layers_mean", "fewest_layers_mean", "solvable", "needed_layers"} <= set(
        greedy["by_difficulty"]["3"]
    )
    assert sum(row["samples"] for row in greedy["by_difficulty"].values()) == 128
    assert "spearman_layers_difficulty" in summary["oracle_matched"] and "spearman_fewest_difficulty" in greedy
    per_k = summary["difficulty_matched"]["paths"]  # one path per k, chosen on the training rows
    routed = read_trace(tmp_path / "run", "difficulty_matched")
    assert all(path[0] == 0 and path[-1] == 7 for path in per_k.values())
    for k, layers in zip(routed["difficulty"].tolist(), routed["layers_executed"].tolist()):
        assert layers == len(per_k[str(k)])
    trace = read_trace(tmp_path / "run", "greedy")
    assert trace["difficulty"].shape == (128,) and set(trace["difficulty"].tolist()) <= set(range(1, 7))
    assert trace["fewest_layers"].min() >= -1 and trace["fewest_layers"].max() <= 8
    capsys.readouterr()
    assert depth_report.main([str(tmp_path / "run")]) == 0
    report = capsys.readouterr().out.splitlines()
    rows = report[report.index(next(line for line in report if line.startswith("difficulty"))) + 1 :][:6]
    assert [int(line.split()[0]) for line in rows] == sorted(set(trace["difficulty"].tolist()))
    assert sum(int(line.split()[1]) for line in rows) == 128
    assert path_study.main([str(tmp_path / "run")]) == 0
    study = capsys.readouterr().out.splitlines()
    table = study[study.index(next(line for line in study if line.startswith("best fixed path's accuracy"))) + 2 :]
    assert [int(line.split()[0]) for line in table] == sorted(set(trace["difficulty"].tolist()))
    assert all(0.0 <= float(value) <= 1.0 for line in table for value in line.split()[2:])


def test_policy_options_refuse_combinations_that_would_do_nothing():
    with pytest.raises(ConfigError, match="agent.loss_cap: only the compute_minus_loss reward"):
        from_dict(
            {},
            [
                "agent.loss_cap=1",
                "agent.reward=compute_minus_error",
                "agent.teacher=labels",
                "trainer.policy_rows=held_out",
            ],
        )
    with pytest.raises(ConfigError, match="set one of them to 0"):
        from_dict({}, ["trainer.imitation_steps=5", "trainer.curriculum_steps=5"])
    with pytest.raises(ConfigError, match="needs a budget; set agent.target_compute"):
        from_dict({}, ["trainer.imitation_steps=5", "agent.target_compute=null"])


def test_a_trace_with_difficulty_but_no_fewest_layers_is_refused(tmp_path):
    from skipjump.runs import TraceError

    (tmp_path / "traces").mkdir()
    arrays = {
        "actions": np.zeros((2, 3), dtype=np.int64),
        "executed": np.ones((2, 4), dtype=bool),
        "layers_executed": np.full(2, 4),
        "label": np.zeros(2, dtype=np.int64),
        "correct": np.ones(2, dtype=bool),
        "loss": np.zeros(2, dtype=np.float32),
        "compute_fraction": np.ones(2, dtype=np.float32),
    }
    np.savez(tmp_path / "traces" / "greedy.npz", **arrays)
    assert "difficulty" not in read_trace(tmp_path, "greedy")
    np.savez(tmp_path / "traces" / "greedy.npz", **arrays, difficulty=np.ones(2, dtype=np.int64))
    with pytest.raises(TraceError, match="'difficulty' without 'fewest_layers'"):
        read_trace(tmp_path, "greedy")
