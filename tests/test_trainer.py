import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import train
from conftest import CONFIG, ROOT, TINY, needs_cxx
from conftest import tiny_trainer as make_trainer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from skipjump.config import ConfigError
from skipjump.evaluate import TASK_METRICS, run_path
from skipjump.reward import reward_loss, teacher_reference
from skipjump.runs import load_run, load_trained
from skipjump.stack import Routing


def snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def changed(before, params) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, params))


def test_supervised_steps_leave_the_policy_untouched():
    updates = make_trainer().updates
    policy, network = snapshot(updates.policy_params), snapshot(updates.network_params)
    inputs, targets = updates.task.train.inputs[:16], updates.task.train.targets[:16]
    _, trace = updates.supervised(inputs, targets, Routing("sample"))  # the policy picks the paths
    assert not changed(policy, updates.policy_params)
    assert changed(network, updates.network_params)
    assert not trace.log_probs.requires_grad  # the policy was frozen: no graph through it


@pytest.mark.parametrize("baseline", ["none", "moving_average", "self_critical", "leave_one_out", "value"])
def test_policy_steps_leave_the_network_untouched_and_compute_no_network_gradients(baseline):
    updates = make_trainer(f"agent.baseline={baseline}").updates
    policy, network = snapshot(updates.policy_params), snapshot(updates.network_params)
    inputs, targets = updates.task.train.inputs[:16], updates.task.train.targets[:16]
    outputs_need_grad = []
    updates.model.head.register_forward_hook(lambda module, args, out: outputs_need_grad.append(out.requires_grad))
    _, trace = updates.policy(inputs, targets)
    assert outputs_need_grad and not any(outputs_need_grad)  # the network was frozen: no graph through it
    assert changed(policy, updates.policy_params)
    assert not changed(network, updates.network_params)
    assert all(p.grad is None for p in updates.network_params)
    paths = updates.config.agent.samples if baseline == "leave_one_out" else 1
    assert trace.actions.shape[0] == 16 * paths


def test_an_exact_policy_step_runs_every_path_of_its_first_inputs_and_moves_lam_by_their_expected_compute():
    updates = make_trainer("agent.estimator=exact", "agent.exact_inputs=4", "agent.lam_lr=1.0").updates
    policy, network = snapshot(updates.policy_params), snapshot(updates.network_params)
    inputs, targets = updates.task.train.inputs[:16], updates.task.train.targets[:16]
    routed = []
    updates.model.head.register_forward_hook(lambda module, args, out: routed.append(out.shape[0]))
    lam = float(updates.agent.lam)
    stats, trace = updates.policy(inputs, targets)
    assert routed == [4 * 4, 4]  # the tiny stack's 4 paths for each of the first 4 inputs, then their full depth
    assert changed(policy, updates.policy_params) and not changed(network, updates.network_params)
    assert trace.actions.shape[0] == 4  # one path per input, drawn from the policy, for the logs
    assert 0 < stats["policy/entropy"] < 1.1 and stats["policy/unique_paths"] <= 4
    # dual ascent by the policy's expected compute (a full-depth path costs more than the target)
    assert float(updates.agent.lam) != pytest.approx(lam)


def test_policy_holdout_keeps_policy_rows_away_from_supervised_steps(monkeypatch):
    trainer = make_trainer("trainer.policy_holdout=0.25", "trainer.policy_rows=held_out", "trainer.warmup_steps=2")
    schedule = trainer.schedule
    train_rows = len(trainer.task.train)
    assert len(schedule.policy_rows) == round(0.25 * train_rows)
    assert set(schedule.policy_rows.tolist()).isdisjoint(schedule.network_rows.tolist())
    assert len(schedule.policy_rows) + len(schedule.network_rows) == train_rows
    seen = {"supervised": set(), "policy": set()}

    def record(phase):
        def step(inputs, targets, *rest):
            seen[phase].update(map(tuple, inputs.flatten(1).tolist()))
            return {}, None

        return step

    monkeypatch.setattr(trainer.updates, "supervised", record("supervised"))
    monkeypatch.setattr(trainer.updates, "policy", record("policy"))
    for _ in range(40):
        trainer.train_step()
    as_rows = lambda rows: set(map(tuple, trainer.task.train.inputs[rows].flatten(1).tolist()))  # noqa: E731
    assert seen["policy"] and seen["policy"] <= as_rows(schedule.policy_rows)
    assert seen["supervised"] and seen["supervised"] <= as_rows(schedule.network_rows)
    assert torch.equal(trainer.policy_split.targets, trainer.task.train.targets[schedule.policy_rows])
    everyone = make_trainer("trainer.policy_holdout=0").schedule  # both steps read the whole training split
    assert len(everyone.policy_rows) == len(everyone.network_rows) == train_rows


def test_policy_rows_all_lets_policy_steps_read_the_networks_rows_and_keeps_the_held_out_split():
    trainer = make_trainer("trainer.policy_holdout=0.25", "trainer.policy_rows=all")
    schedule, train_rows = trainer.schedule, len(trainer.task.train)
    assert sorted(schedule.policy_rows.tolist()) == list(range(train_rows))
    assert len(schedule.held_out_rows) == round(0.25 * train_rows)
    assert set(schedule.held_out_rows.tolist()).isdisjoint(schedule.network_rows.tolist())
    # references and the oracle's warm start still choose on rows the network never trained on
    assert torch.equal(trainer.policy_split.targets, trainer.task.train.targets[schedule.held_out_rows])


@pytest.mark.parametrize("teacher", ["full_depth", "full_depth_answer"])
def test_a_full_depth_teacher_scores_paths_against_full_depth_and_reads_no_label(teacher):
    updates = make_trainer(f"agent.teacher={teacher}").updates
    inputs, targets = updates.task.train.inputs[:64], updates.task.train.targets[:64]
    with torch.no_grad():
        full, full_trace = updates.model(inputs, Routing("full"))
        _, short_trace = updates.model(inputs, Routing("fixed", actions=torch.tensor([2, -1, -1])))
    torch.testing.assert_close(updates._reference(inputs), full)
    # a short path's outputs, moved so that some answers change (an untrained model's rarely do)
    short = full + 3 * torch.randn(full.shape, generator=torch.Generator().manual_seed(0))
    changed_answer = short.argmax(-1) != full.argmax(-1)
    assert changed_answer.any() and not changed_answer.all()  # both kinds of rows are checked
    kl = torch.nn.functional.kl_div(short.log_softmax(-1), full.log_softmax(-1), reduction="none", log_target=True)
    penalty = kl.sum(-1) if teacher == "full_depth" else changed_answer.float()  # full_depth_answer: 0/1
    lam = float(updates.agent.lam)
    _, rewards = updates._score(short, targets, short_trace, inputs, None)  # runs full depth itself
    torch.testing.assert_close(rewards, lam * (1 - short_trace.compute_fraction) - penalty)
    _, shuffled = updates._score(short, targets.roll(1), short_trace, inputs, full)
    torch.testing.assert_close(shuffled, rewards)  # labels are not read
    _, at_full = updates._score(full, targets, full_trace, inputs, full)
    torch.testing.assert_close(at_full, lam * (1 - full_trace.compute_fraction))  # full depth costs itself 0
    two_copies = reward_loss(updates.task, updates.model, teacher, inputs, short.repeat(2, 1), None, full)
    torch.testing.assert_close(two_copies, penalty.repeat(2))  # each copy paired with its own input


def test_the_labels_teacher_scores_by_the_task_loss_and_runs_nothing_and_its_config_checks():
    updates = make_trainer("agent.teacher=labels", "trainer.policy_rows=held_out").updates
    inputs, targets = updates.task.train.inputs[:16], updates.task.train.targets[:16]
    assert teacher_reference(updates.model, "labels", inputs) is None  # the labels teacher runs nothing
    with torch.no_grad():
        short, _ = updates.model(inputs, Routing("fixed", actions=torch.tensor([2, -1, -1])))
    task_loss = updates.task.per_sample_loss(short, targets)
    by_labels = reward_loss(updates.task, updates.model, "labels", inputs, short, task_loss)
    torch.testing.assert_close(by_labels, task_loss)  # the labels teacher: the task loss
    with pytest.raises(ConfigError, match="agent.teacher"):
        make_trainer("agent.teacher=full_depth", "agent.reward=blockdrop", "agent.target_compute=null")
    with pytest.raises(ConfigError, match="trainer.policy_rows: all reads the labels"):
        make_trainer("agent.teacher=labels", "trainer.policy_rows=all", "trainer.policy_holdout=0.25")
    make_trainer("agent.teacher=labels", "trainer.policy_rows=all", "trainer.policy_holdout=0")  # no rows to tell apart


@pytest.mark.parametrize("estimator", ["sampled", "exact"])
def test_the_teacher_pairs_every_copy_of_an_input_with_that_inputs_full_depth(monkeypatch, estimator):
    updates = make_trainer(f"agent.estimator={estimator}", "agent.exact_inputs=16").updates
    inputs, targets = updates.task.train.inputs[:16], updates.task.train.targets[:16]
    scored, score = [], updates._score
    monkeypatch.setattr(updates, "_score", lambda *args: scored.append((*args, score(*args)[1])) or score(*args))
    lam = float(updates.agent.lam)
    updates._policy_loss(inputs, targets, 0, 0.0)
    ((outputs, _, trace, _, reference, rewards),) = scored
    assert len(outputs) == len(trace.actions) == len(rewards)  # the sampled rows only, not the teacher's copy
    torch.testing.assert_close(reference, updates._reference(inputs))  # the ride-along copy is a full-depth pass
    full = trace.executed.all(dim=1)  # copies that ran full depth: no divergence from their own input's
    assert full[len(inputs) :].any()  # some beyond the first block of copies
    # paired with another input's full depth, a copy would diverge from it
    torch.testing.assert_close(rewards[full], lam * (1 - trace.compute_fraction[full]))


def test_policy_augment_shifts_every_policy_row_by_one_pixel_and_leaves_supervised_rows_alone(monkeypatch):
    from skipjump.tasks.digits import from_patches

    trainer = make_trainer("trainer.policy_augment=1", "trainer.warmup_steps=2")
    seen = {"supervised": [], "policy": []}
    monkeypatch.setattr(
        trainer.updates, "supervised", lambda inputs, *rest: (seen["supervised"].append(inputs), ({}, None))[1]
    )
    monkeypatch.setattr(trainer.updates, "policy", lambda inputs, *rest: (seen["policy"].append(inputs), ({}, None))[1])
    for _ in range(10):
        trainer.train_step()
    images = lambda rows: from_patches(trainer.task.train.inputs[rows], trainer.task.patch)  # noqa: E731
    padded = torch.nn.functional.pad(images(trainer.schedule.policy_rows), (1, 1, 1, 1))
    shifts = {(dy, dx): padded[:, dy : dy + 8, dx : dx + 8].flatten(1) for dy in range(3) for dx in range(3)}
    for batch in seen["policy"]:
        for image in from_patches(batch, trainer.task.patch).flatten(1):
            found = [shift for shift, rows in shifts.items() if (rows == image).all(dim=1).any()]
            assert found and (1, 1) not in found  # a shifted copy of a policy row, never the row itself
    network = set(map(tuple, images(trainer.schedule.network_rows).flatten(1).tolist()))
    supervised = [
        tuple(row)
        for batch in seen["supervised"]
        for row in from_patches(batch, trainer.task.patch).flatten(1).tolist()
    ]
    assert supervised and set(supervised) <= network
    with pytest.raises(ConfigError, match="trainer.policy_augment: task 'khop' defines no augmentation"):
        make_trainer("task.name=khop", "trainer.policy_augment=0.5")
    with pytest.raises(ConfigError, match="trainer.policy_augment: the joint schedule"):
        make_trainer("trainer.policy_augment=0.5", "trainer.schedule=joint", "trainer.policy_holdout=0")


def test_schedule_warmup_then_cycles_and_joint():
    schedule = make_trainer("trainer.warmup_steps=3", "trainer.supervised_steps=2", "trainer.policy_steps=1").schedule
    assert [schedule.phase(s) for s in range(9)] == ["supervised"] * 3 + ["supervised", "supervised", "policy"] * 2
    sequential = make_trainer("trainer.schedule=sequential", "trainer.warmup_steps=3").schedule
    assert [sequential.phase(s) for s in range(6)] == ["supervised"] * 3 + ["policy"] * 3  # then the policy alone
    joint = make_trainer("trainer.schedule=joint", "trainer.policy_holdout=0")
    assert [joint.schedule.phase(s) for s in range(4)] == ["supervised", "supervised", "joint", "joint"]
    updates = joint.updates
    policy, network = snapshot(updates.policy_params), snapshot(updates.network_params)
    stats, _ = updates.joint(joint.task.train.inputs[:16], joint.task.train.targets[:16])
    assert changed(policy, updates.policy_params) and changed(network, updates.network_params)
    assert {f"train/{key}" for key in TASK_METRICS} <= set(stats)


def test_full_and_policy_supervision_alternates_full_depth_and_the_policys_paths():
    trainer = make_trainer("trainer.supervised_path=full_and_policy", "trainer.steps=10", "trainer.warmup_steps=2")
    jump_weights = trainer.model.stack.jump_weights.detach().clone()
    modes, trained_on = [], []
    for _ in range(10):
        step, updates = trainer.step, trainer.policy_updates
        phase = trainer.schedule.phase(step)
        _, paths = trainer.train_step()
        if phase == "supervised":
            modes.append(trainer.schedule.supervised_routing(updates, step).mode)
            trained_on.append(paths is not None)  # the policy picked the supervised step's paths
    assert modes == ["full", "full", "full", "sample", "full", "sample"]  # warm-up, then in turn
    assert trained_on == [mode == "sample" for mode in modes]
    assert not torch.equal(jump_weights, trainer.model.stack.jump_weights)  # full depth alone never trains them


def test_full_depth_steps_come_before_the_supervised_paths_random_paths(monkeypatch):
    trainer = make_trainer(
        "trainer.supervised_path=random", "trainer.random_p=0.5", "trainer.full_depth_steps=4", "trainer.steps=12"
    )
    supervised = trainer.updates.supervised
    layers = []  # per supervised step: the layers each row ran

    def recording(inputs, targets, routing):
        stats, trace = supervised(inputs, targets, routing)
        layers.append(trace.layers_executed.tolist())
        return stats, trace

    monkeypatch.setattr(trainer.updates, "supervised", recording)
    for _ in range(12):
        trainer.train_step()
    full = trainer.config.model.num_layers
    assert len(layers) == 7  # 2 warm-up steps, then one supervised step per cycle of two
    assert all(n == full for step in layers[:3] for n in step)  # steps 0, 1, 2
    # steps 4, 6, 8, 10 jump at p = 0.5: all 16 rows of a step at full depth has odds 4^-16
    assert all(min(step) < full for step in layers[3:])


def test_curriculum_unlocks_decisions_from_the_last_layer_backwards():
    trainer = make_trainer("trainer.curriculum_steps=2")
    seen = []
    for updates in range(7):
        trainer.policy_updates = updates
        seen.append(trainer.first_decision())
    assert seen == [1, 1, 0, 0, 0, 0, 0]  # 4 layers: the decision after layer 2 changes nothing


def test_exploration_decays_from_agent_explore_to_zero_and_reaches_the_sampled_paths(monkeypatch):
    trainer = make_trainer("agent.explore=0.4", "trainer.steps=12", "trainer.warmup_steps=2")
    floors = []
    for step in (2, 7, 12):  # the first policy step comes after the 2-step warm-up
        trainer.step = step
        floors.append(trainer.exploration())
    assert floors == pytest.approx([0.4, 0.2, 0.0])
    routings = []
    forward = trainer.model.forward
    monkeypatch.setattr(trainer.model, "forward", lambda x, routing: routings.append(routing) or forward(x, routing))
    trainer.step = 7  # a policy step (warm-up 2, then supervised and policy steps alternate)
    stats, _ = trainer.train_step()
    assert [r.explore for r in routings if r.mode == "sample"] == [pytest.approx(0.2)]
    assert stats["policy/explore"] == pytest.approx(0.2)


def run_train(tmp_path: Path, name: str, *overrides: str) -> Path:
    run_dir = tmp_path / name
    args = ["--config", CONFIG, "--run-dir", str(run_dir)]
    short = ["trainer.steps=40", "trainer.warmup_steps=20", "trainer.log_every=10", "trainer.eval_every=20"]
    assert train.main([*args, *TINY, *short, *overrides]) == 0
    return run_dir


def test_a_short_run_writes_every_file_with_histograms_in_the_events(tmp_path):
    run_dir = run_train(tmp_path, "run")
    assert (run_dir / "config.yaml").read_text().startswith("seed: 0\ntask:\n  name: digits")
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "train/loss" in m] == [10, 20, 30, 40]
    assert any("policy/reward" in m for m in metrics)
    summary = json.loads((run_dir / "summary.json").read_text())
    for policy in ("greedy", "full", "random_matched", "static_matched", "cascade_matched", "oracle_matched"):
        assert set(TASK_METRICS) <= set(summary[policy])
        trace = np.load(run_dir / "traces" / f"{policy}.npz")
        assert {"actions", "layers_executed", "label", "correct", "loss"} <= set(trace.files)
        assert trace["actions"].shape == (len(trace["label"]), 3)
    assert summary["full"]["compute_fraction"] == 1.0
    budget = summary["greedy"]["compute_fraction"]
    for reference in ("cascade_matched", "oracle_matched"):
        assert summary[reference]["compute_fraction"] <= budget + 0.03  # the cascade's rule is set on training rows
    if summary["static_matched"]["compute_fraction"] <= budget:  # the oracle could give everyone static's path
        assert summary["oracle_matched"]["accuracy"] >= summary["static_matched"]["accuracy"]
    assert "gap_closed" in summary["greedy"]
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] == 40

    events = EventAccumulator(str(run_dir), size_guidance={"histograms": 0, "scalars": 0})
    events.Reload()
    histograms = set(events.Tags()["histograms"])
    assert {"jumps/layer0", "jumps/layer1", "jumps/depth", "jumps/layer_usage"} <= histograms
    assert "jumps/layer2" not in histograms  # 4 layers: after layer 2 every action lands on 3, no decision
    assert "eval_jumps/depth" in histograms
    depth = events.Histograms("jumps/depth")[-1].histogram_value
    assert depth.num == 5 * 8 * 16  # the window's 5 policy steps, 8 sampled paths (leave-one-out) of 16 inputs
    scalars = set(events.Tags()["scalars"])
    expected = {f"{prefix}/{key}" for prefix in ("train", "policy", "eval/greedy", "eval/full") for key in TASK_METRICS}
    expected |= {"policy/advantage_std", "policy/entropy", "policy/loss", "policy/lam", "gates/threshold_layer0"}
    expected |= {"policy/reward", "eval/static_matched/compute_fraction"}
    assert expected <= scalars


def test_same_config_and_seed_give_the_same_summary(tmp_path):
    first = (run_train(tmp_path, "a") / "summary.json").read_text()
    second = (run_train(tmp_path, "b") / "summary.json").read_text()
    assert first == second
    third = (run_train(tmp_path, "c", "seed=1") / "summary.json").read_text()
    assert third != first


def test_path_study_and_depth_report_read_a_run_directory(tmp_path):
    import subprocess

    run_dir = run_train(tmp_path, "run")
    result = subprocess.run(
        [sys.executable, str(ROOT / "experiments/path_study.py"), str(run_dir)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[4:]]
    assert [int(r[0]) for r in rows] == [2, 3, 4]  # 4 layers, max jump 2: 2 to 4 layers run
    _, task, model = load_run(run_dir)
    for line, row in zip(result.stdout.splitlines()[4:], rows):
        best, mean, oracle = float(row[3]), float(row[4]), float(row[5])
        assert mean <= best <= oracle <= 1.0
        path = tuple(int(layer) for layer in re.findall(r"\d+", line.split("(", 1)[1]))
        assert len(path) == int(row[0])
        assert run_path(model, task, task.test, path).summary["accuracy"] == pytest.approx(best, abs=5e-5)

    report = subprocess.run(
        [sys.executable, str(ROOT / "experiments/depth_report.py"), str(run_dir)], capture_output=True, text=True
    )
    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    split = lines.index("layers  samples  accuracy  full_depth")
    by_label = np.array([line.split() for line in lines[4:split]], dtype=float)  # after the header and titles
    by_depth = np.array([line.split() for line in lines[split + 1 :]], dtype=float)
    trace = np.load(run_dir / "traces" / "greedy.npz")
    assert by_label[:, 1].sum() == by_depth[:, 1].sum() == len(trace["label"])
    n = len(trace["label"])  # printed means are rounded: 2 decimals per label, 4 per depth
    assert (by_label[:, 1] * by_label[:, 2]).sum() == pytest.approx(trace["layers_executed"].sum(), abs=0.005 * n)
    assert (by_depth[:, 1] * by_depth[:, 2]).sum() == pytest.approx(trace["correct"].sum(), abs=0.00005 * n)
    full_correct = np.load(run_dir / "traces" / "full.npz")["correct"]  # the same samples at full depth
    assert (by_depth[:, 1] * by_depth[:, 3]).sum() == pytest.approx(full_correct.sum(), abs=0.00005 * n)


def test_policy_rows_gap_reproduces_the_runs_test_evaluation_and_adds_the_policys_rows(tmp_path, capsys):
    import policy_rows_gap

    run_dir = run_train(tmp_path, "run")
    (_, policy_split, policy_n, *_), (_, test_split, test_n, greedy, *_, compute, gap) = policy_rows_gap.rows_of(
        str(run_dir)
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (policy_split, test_split, test_n) == ("policy rows", "test", len(load_run(run_dir)[1].test))
    assert policy_n == len(load_trained(run_dir)[0].policy_split) > 0  # the held-out training rows
    assert greedy == pytest.approx(summary["greedy"]["accuracy"])
    assert compute == pytest.approx(summary["greedy"]["compute_fraction"])
    expected_gap = summary["greedy"]["gap_closed"]
    assert gap is None if expected_gap is None else gap == pytest.approx(expected_gap)
    assert policy_rows_gap.main([str(run_dir), str(tmp_path / "missing")]) == 2
    assert "error: " in capsys.readouterr().err


@needs_cxx
def test_compiled_layers_train_full_depth_steps_alike_and_routed_passes_stay_eager():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # forget graphs other tests compiled for the same shapes
    trainer = make_trainer("trainer.compile=true", "trainer.warmup_steps=1", "trainer.policy_holdout=0")
    stack, batch = trainer.model.stack, trainer.task.train.rows(torch.arange(16))
    assert len(stack.compiled_layers) == stack.num_layers

    def gradients() -> list[torch.Tensor]:
        trainer.model.zero_grad()
        outputs, _ = trainer.model(batch.inputs, Routing("full"))
        trainer.task.per_sample_loss(outputs, batch.targets).mean().backward()
        return [p.grad.clone() for p in trainer.model.network_parameters() if p.grad is not None]

    graphs = counters["stats"]["unique_graphs"]
    compiled = gradients()
    assert counters["stats"]["unique_graphs"] > graphs  # the full-depth pass ran the compiled layers
    layers, stack.compiled_layers = stack.compiled_layers, []
    eager = gradients()
    assert len(compiled) == len(eager) > 0
    for c, e in zip(compiled, eager):
        torch.testing.assert_close(c, e, rtol=1e-4, atol=1e-6)
    stack.compiled_layers = layers
    graphs = counters["stats"]["unique_graphs"]
    for _ in range(4):  # supervised and policy steps in turn, then both evaluations
        trainer.train_step()
    trainer.evaluate_one("greedy"), trainer.evaluate_one("full")
    assert counters["stats"]["unique_graphs"] == graphs  # nothing recompiled: routed passes ran eager


def test_policy_weight_decay_shrinks_the_policy_by_lr_times_decay_per_step_beside_the_same_update():
    steps = {}
    for decay in (0.0, 0.5):
        updates = make_trainer(f"agent.weight_decay={decay}").updates
        start = snapshot(updates.policy_params)
        updates.policy(updates.task.train.inputs[:16], updates.task.train.targets[:16])
        steps[decay] = (start, snapshot(updates.policy_params))
    (start, plain), (same_start, decayed) = steps[0.0], steps[0.5]
    lr = updates.config.agent.lr
    for s, s2, p, d in zip(start, same_start, plain, decayed):
        torch.testing.assert_close(s, s2, rtol=0, atol=0)
        torch.testing.assert_close(d - p, -lr * 0.5 * s, rtol=1e-4, atol=1e-7)


def gradients(params) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]


def test_distill_trains_full_depth_on_the_labels_and_the_path_on_full_depths_outputs(monkeypatch):
    updates = make_trainer("trainer.supervised_path=random", "trainer.distill=true").updates
    inputs, targets = updates.task.train.inputs[:16], updates.task.train.targets[:16]
    path = Routing("fixed", actions=torch.tensor([1, -1, 0]))  # layers 0, 2, 3 of 4
    grads = {}
    monkeypatch.setattr(updates, "_step", lambda params, *_: grads.update(got=gradients(params)))
    updates.supervised(inputs, targets, path)
    model = updates.model
    model.zero_grad(set_to_none=True)
    full, short = model(inputs, Routing("full"))[0], model(inputs, path)[0]
    teacher = full.detach().log_softmax(-1)  # KL(full depth || path), written out: full depth is only the target
    kl = torch.nn.functional.kl_div(short.log_softmax(-1), teacher, reduction="none", log_target=True).sum(-1)
    (torch.nn.functional.cross_entropy(full, targets) + kl.mean()).backward()
    torch.testing.assert_close(grads["got"], gradients(updates.network_params), rtol=1e-4, atol=1e-6)
    model.zero_grad(set_to_none=True)
    updates.supervised(inputs, targets, Routing("full"))  # full depth alone: the labels, one pass
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(inputs, Routing("full"))[0], targets).backward()
    torch.testing.assert_close(grads["got"], gradients(updates.network_params), rtol=1e-4, atol=1e-6)
