import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import train
from conftest import CONFIG, ROOT
from conftest import TINY as COMMON_TINY

from skipjump.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from skipjump.config import from_dict, load
from skipjump.monitor import Monitor
from skipjump.runlog import RunLog
from skipjump.tasks import DataError, DigitsTask
from skipjump.trainer import NonFiniteError, build

TINY = [*COMMON_TINY, "trainer.warmup_steps=10", "trainer.log_every=10"]

BAD_CONFIGS = [
    (["agent.lamda=1"], "unknown key 'agent.lamda'; did you mean 'agent.lam'?"),
    (["trainer.stepz=5"], "did you mean 'trainer.steps'?"),
    (["modle.dims=8"], "did you mean 'model'?"),
    (["agent.lam=-1"], "agent.lam: got -1.0, must be >= 0"),
    (["model.max_jump=8"], "model.max_jump: got 8, must be in [1, model.num_layers - 1 = 7]"),
    (["model.max_jump=0"], "model.max_jump: got 0"),
    (["model.num_layers=1"], "model.num_layers: got 1, must be >= 2"),
    (["trainer.steps=0"], "trainer.steps: got 0, must be > 0"),
    (["trainer.batch_size=0"], "trainer.batch_size: got 0, must be > 0"),
    (["trainer.batch_size=2.5"], "trainer.batch_size: expected int, got 2.5"),
    (["trainer.steps=ten"], "trainer.steps: expected int, got 'ten'"),
    (["model.attention=maybe"], "model.attention: expected bool, got 'maybe'"),
    (["agent.entropy_coef=-0.1"], "agent.entropy_coef: got -0.1, must be >= 0"),
    (["task.data_file=/no/such/digits.npz"], "task.data_file: no such file: /no/such/digits.npz"),
    (["task.name=imagenet"], "task.name: got 'imagenet', allowed: digits"),
    (["agent.baseline=critic"], "agent.baseline: got 'critic', allowed: none, moving_average"),
    (["model.policy_inputs=hidden"], "model.policy_inputs: got 'hidden', allowed: input, state"),
    (["agent.reward=accuracy"], "agent.reward: got 'accuracy'"),
    (["trainer.schedule=sometimes"], "trainer.schedule: got 'sometimes'"),
    (["trainer.supervised_path=teleport"], "trainer.supervised_path: got 'teleport'"),
    (["trainer.full_depth_steps=100"], "trainer.full_depth_steps: trainer.supervised_path is full already"),
    (["trainer.schedule=sequential", "trainer.supervised_path=policy"], "the sequential schedule trains the network"),
    (
        ["trainer.schedule=sequential", "trainer.supervised_path=random", "trainer.full_depth_steps=500"],
        "trainer.full_depth_steps: got 500, but under the sequential schedule",
    ),
    (["trainer.lr=0"], "trainer.lr: got 0.0, must be > 0"),
    (["agent.weight_decay=500"], "agent.weight_decay: got 500.0, and with agent.lr = 0.003 each step scales"),
    (["trainer.weight_decay=500"], "trainer.weight_decay: got 500.0, and with trainer.lr = 0.002 each step scales"),
    (["trainer.distill=true"], "trainer.distill: trainer.supervised_path is full"),
    (
        [
            "trainer.distill=true",
            "trainer.supervised_path=random",
            "trainer.schedule=joint",
            "trainer.policy_holdout=0",
        ],
        "trainer.distill: the joint schedule has no supervised steps",
    ),
    (
        ["agent.loss_cap=0.5", "agent.teacher=full_depth_answer"],
        "agent.loss_cap: the full_depth_answer teacher's loss is 0 or 1 already",
    ),
    (
        ["agent.greedy_budget=null", "agent.greedy_fill=false"],
        "agent.greedy_fill: false caps greedy's compute at agent.greedy_budget, which is null",
    ),
    (["agent.momentum=1.5"], "agent.momentum: got 1.5, must be in [0, 1]"),
    (["agent.explore=1"], "agent.explore: got 1.0, must be in [0, 1)"),
    (["agent.target_entropy=2"], "agent.target_entropy: got 2.0, must be in (0, ln(model.max_jump + 1) = 1.386)"),
    (["model.heads=5"], "model.heads: got 5, must divide model.dims = 64"),
    (["trainer.policy_holdout=1"], "trainer.policy_holdout: got 1.0, must be in [0, 1)"),
    (["trainer.policy_holdout=0.2", "trainer.schedule=joint"], "trainer.policy_holdout: the joint schedule"),
    (["agent.target_compute=0"], "agent.target_compute: got 0.0, must be in (0, 1] or null"),
    (["agent.reward=blockdrop"], "the blockdrop reward has no lam to adapt; set agent.target_compute=null"),
    (["trainer.warmup_steps=5000"], "trainer.warmup_steps: got 5000, must be < trainer.steps = 3000"),
    (["agent.baseline=leave_one_out", "agent.samples=1"], "agent.samples: got 1, leave_one_out needs >= 2"),
    (["agent.credit=gate"], "agent.credit: got 'gate'"),
    (["seed=-1"], "seed: got -1, must be >= 0"),
    (["task.test_fraction=1.5"], "task.test_fraction: got 1.5, must be in (0, 1)"),
    (["trainer"], "override 'trainer': expected key=value"),
    (["trainer.lr=.inf"], "trainer.lr: got inf, must be a finite number"),
    (["agent.lam=.nan"], "agent.lam: got nan, must be a finite number"),
    (["model.gate_threshold=5"], "model.gate_threshold: got 5.0, must be in [0, 1]"),
    (["task.patch=3"], "task.patch: got 3, allowed: 1, 2, 4, 8"),
    (["trainer=3"], "trainer: expected a mapping of keys, got 3"),
    (["agent.estimator=exact", "agent.explore=0.1"], "agent.estimator: exact samples no path (no exploration)"),
    (["agent.estimator=exact", "model.num_layers=12"], "12 layers with max_jump 3 have 773 (at most 256)"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_CONFIGS, ids=[" ".join(o) for o, _ in BAD_CONFIGS])
def test_bad_config_exits_2_with_one_line_naming_the_key(overrides, message, capsys, tmp_path):
    assert train.main(["--config", CONFIG, "--run-dir", str(tmp_path / "run"), *overrides]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert message in err
    assert not (tmp_path / "run").exists()  # nothing was started


def test_scientific_notation_reads_as_a_number():
    assert load(CONFIG, ["agent.lr=1e-3", "trainer.lr=2E-4"]).agent.lr == 0.001


def test_a_new_run_never_writes_into_an_existing_one(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train.main(["--config", CONFIG, "--run-dir", str(run_dir), *TINY, "trainer.steps=12"]) == 0
    before = (run_dir / "metrics.jsonl").read_text()
    assert train.main(["--config", CONFIG, "--run-dir", str(run_dir), *TINY, "trainer.steps=12"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run_dir / "metrics.jsonl").read_text() == before


def test_a_resumed_run_may_not_change_what_it_learns(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train.main(["--config", CONFIG, "--run-dir", str(run_dir), *TINY, "trainer.steps=12"]) == 0
    for override in ("seed=3", "trainer.lr=0.1", "model.dims=8"):
        assert train.main(["--resume", str(run_dir), override]) == 2
        assert "a resumed run may only change trainer.steps" in capsys.readouterr().err


def test_bad_config_from_the_command_line_has_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "experiments/train.py"), "--config", CONFIG, "agent.lamda=1"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: unknown key 'agent.lamda'; did you mean 'agent.lam'?"
    missing = subprocess.run(
        [sys.executable, str(ROOT / "experiments/train.py"), "--config", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "config file not found" in missing.stderr


def metrics(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("charts/steps_per_second", None)  # wall-clock, never reproducible
    return lines


def test_stop_and_resume_equals_one_unbroken_run(tmp_path):
    steps = ["trainer.steps=50", "trainer.checkpoint_every=1000"]
    assert train.main(["--config", CONFIG, "--run-dir", str(tmp_path / "whole"), *TINY, *steps]) == 0

    # What a SIGINT at step 25 does: stop after the step, save, close (no evaluation).
    config = load(CONFIG, [*TINY, *steps])
    run = RunLog(tmp_path / "split", config)
    trainer = build(config, Monitor(run, config.trainer))
    run.open()
    trainer.train(steps=25)
    trainer.monitor.save(trainer)
    run.close()
    assert train.main(["--resume", str(tmp_path / "split")]) == 0

    whole = load_checkpoint(tmp_path / "whole/checkpoints/last.pt")
    split = load_checkpoint(tmp_path / "split/checkpoints/last.pt")
    assert whole["step"] == split["step"] == 50
    for part in ("model", "updates"):
        torch.testing.assert_close(whole[part], split[part], rtol=0, atol=0, equal_nan=True)
    assert metrics(tmp_path / "whole") == metrics(tmp_path / "split")
    assert (tmp_path / "whole/summary.json").read_text() == (tmp_path / "split/summary.json").read_text()


def start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "experiments/train.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_save_a_checkpoint_and_exit_with_the_usual_code(tmp_path, sig, code):
    run_dir = tmp_path / "run"
    proc = start(["--config", CONFIG, "--run-dir", str(run_dir), *TINY, "trainer.steps=100000"])
    wait_for(run_dir / "metrics.jsonl")  # well into training
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    step = load_checkpoint(run_dir / "checkpoints/last.pt")["step"]
    assert step >= 10 and f"stopped at step {step}" in out
    resumed = subprocess.run(
        [sys.executable, str(ROOT / "experiments/train.py"), "--resume", str(run_dir), f"trainer.steps={step + 15}"],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    logged = [m["step"] for m in metrics(run_dir) if "train/loss" in m]
    assert logged == sorted(set(logged)) and logged[-1] == step + 15


KILLS = 6  # each costs a process start (~4 s of imports) and a resume


def test_sigkill_at_random_moments_never_loses_the_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    checkpoint = run_dir / "checkpoints/last.pt"
    rng = random.Random(0)
    every_step = ["trainer.checkpoint_every=1", "trainer.steps=100000"]
    proc = start(["--config", CONFIG, "--run-dir", str(run_dir), *TINY, *every_step])
    steps = []
    for _ in range(KILLS):
        wait_for(run_dir / "metrics.jsonl")  # training (and a checkpoint write each step) under way
        time.sleep(rng.uniform(0.0, 1.0))
        proc.kill()
        proc.wait()
        steps.append(load_checkpoint(checkpoint)["step"])  # always loadable
        proc = start(["--resume", str(run_dir)])
        deadline = time.monotonic() + 60
        while load_checkpoint(checkpoint)["step"] <= steps[-1]:  # the resumed run makes progress
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    final_step = load_checkpoint(checkpoint)["step"] + 12
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments/train.py"), "--resume", str(run_dir), f"trainer.steps={final_step}"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert steps == sorted(steps) and len(set(steps)) == KILLS  # every kill landed in training
    logged = [m["step"] for m in metrics(run_dir) if "train/loss" in m]
    assert logged == sorted(set(logged)), "metrics lost or repeated steps"


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = from_dict({}, [*TINY, "trainer.steps=40", "trainer.checkpoint_every=5"])
    run = RunLog(tmp_path, config)
    trainer = build(config, Monitor(run, config.trainer))
    run.open()
    task = trainer.task
    trainer.train(steps=12)
    good = load_checkpoint(run.checkpoint_path)
    original = task.per_sample_loss

    def poisoned(outputs, targets):
        loss = original(outputs, targets)
        return loss * float("nan") if trainer.step == 13 else loss

    monkeypatch.setattr(task, "per_sample_loss", poisoned)
    with pytest.raises(NonFiniteError, match="step 13: non-finite task loss"):
        trainer.train()
    kept = load_checkpoint(run.checkpoint_path)
    assert kept["step"] == good["step"] == 12
    weights = {k: v for k, v in kept["model"].items() if k != "stack.last_loss"}  # NaN = "no loss seen yet"
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_non_finite_gradient_is_named():
    trainer = build(from_dict({}, [*TINY, "trainer.steps=40"]))
    trainer.model.head.out.weight.register_hook(lambda grad: grad * float("nan"))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.raises(NonFiniteError, match="step 0: non-finite network gradient norm"):
        trainer.train_step()  # a supervised step (warm-up)
    assert all(torch.equal(b, p) for b, p in zip(before, trainer.model.parameters()))  # nothing moved


def test_non_finite_reward_is_named(monkeypatch):
    trainer = build(from_dict({}, [*TINY, "trainer.steps=40", "trainer.warmup_steps=0"]))
    monkeypatch.setattr("skipjump.updates.jump_reward", lambda *a, **k: torch.full((64,), float("inf")))
    with pytest.raises(NonFiniteError, match="step 1: non-finite reward"):
        trainer.train(steps=2)  # step 0 is supervised, step 1 a policy step


def make_run(tmp_path: Path, *overrides: str) -> Path:
    run_dir = tmp_path / "run"
    assert train.main(["--config", CONFIG, "--run-dir", str(run_dir), *TINY, "trainer.steps=12", *overrides]) == 0
    return run_dir


def test_truncated_corrupted_and_mismatched_checkpoints_give_clear_errors(tmp_path, capsys):
    run_dir = make_run(tmp_path)
    path = run_dir / "checkpoints/last.pt"
    whole = path.read_bytes()

    path.write_bytes(whole[: len(whole) // 2])
    assert train.main(["--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: unreadable checkpoint" in err

    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        load_checkpoint(path)

    other = make_run(tmp_path / "other", "model.dims=32", "model.heads=4")
    path.write_bytes((other / "checkpoints/last.pt").read_bytes())
    assert train.main(["--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: the model does not match this architecture: shape or dtype mismatch" in err

    path.write_bytes(whole)
    save_checkpoint(path, {"model": load_checkpoint(path)["model"]})  # the weights, nothing else
    assert train.main(["--resume", str(run_dir)]) == 2
    assert "incomplete checkpoint, missing updates, schedule" in capsys.readouterr().err

    save_checkpoint(path, {"weights": 1})
    with pytest.raises(CheckpointError, match="not a skipjump checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images": np.zeros((0, 8, 8)), "labels": np.zeros(0, dtype=int)}, r"shape \(N > 0, 8, 8\)"),
        ({"images": np.zeros((5, 8, 7)), "labels": np.zeros(5, dtype=int)}, r"shape \(N > 0, 8, 8\)"),
        ({"images": np.zeros((5, 8, 8)), "labels": np.zeros(4, dtype=int)}, r"'labels' must have shape \(5,\)"),
        ({"images": np.zeros((5, 8, 8)), "labels": np.full(5, 12)}, "integers in 0..9"),
        ({"images": np.full((5, 8, 8), np.nan), "labels": np.zeros(5, dtype=int)}, "NaN or infinite"),
        ({"pixels": np.zeros((5, 8, 8))}, "missing array 'images'"),
    ],
)
def test_malformed_data_files_are_rejected(tmp_path, arrays, message):
    path = tmp_path / "digits.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        DigitsTask(data_file=str(path))


def test_unreadable_data_file_exits_2(tmp_path, capsys):
    path = tmp_path / "digits.npz"
    path.write_text("")
    assert train.main(["--config", CONFIG, f"task.data_file={path}"]) == 2
    assert f"{path}: cannot read as .npz" in capsys.readouterr().err


def test_a_good_data_file_trains(tmp_path):
    from sklearn.datasets import load_digits

    data = load_digits()
    path = tmp_path / "digits.npz"
    np.savez(path, images=data.images[:300], labels=data.target[:300])
    task = DigitsTask(data_file=str(path))
    assert len(task.train) + len(task.test) == 300
    assert float(task.train.inputs.max()) <= 1.0
