"""A shared run directory never runs code, and a run that cannot be written fails with one clean line.

Every program that reads a run directory (train.py --resume, skipjump.runs, path_study.py,
depth_report.py, load_checkpoint) is handed crafted files whose unpickling would create a marker
file; each must refuse them with a one-line error and the marker must never appear.
"""

import copy
import errno
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
import types
from pathlib import Path

import depth_report
import numpy as np
import path_study
import pytest
import torch
import train
from conftest import CONFIG, ROOT
from conftest import TINY as COMMON_TINY

import skipjump.checkpoint
from skipjump.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from skipjump.config import ConfigError, from_dict
from skipjump.monitor import Monitor
from skipjump.runlog import RunLog
from skipjump.runs import TraceError, check_state, load_run, read_run, read_trace
from skipjump.trainer import build

# 4 steps, the last two a supervised and a policy step: every part of a checkpoint is filled in
TINY = [*COMMON_TINY, "trainer.steps=4", "trainer.warmup_steps=2", "trainer.log_every=2"]
# checkpoints at steps 0, 2, 4 and 6, metrics at 2, 4 and 6
WRITES = [
    *COMMON_TINY,
    "trainer.steps=6",
    "trainer.warmup_steps=4",
    "trainer.log_every=2",
    "trainer.checkpoint_every=2",
]


class Touch:
    """Unpickling this creates ``marker``: what a crafted file in a shared run directory would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


class Open:
    """The same with the builtin ``open`` (creates ``marker`` for writing)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


PAYLOADS = [Touch, Open]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One tiny finished run (checkpoint, config, traces), made once; tests work on copies."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert train.main(["--config", CONFIG, "--run-dir", str(run_dir), *TINY]) == 0
    return run_dir


@pytest.fixture
def run_dir(finished_run, tmp_path) -> Path:
    copied = tmp_path / "run"
    shutil.copytree(finished_run, copied)
    return copied


def checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.pt"


def one_line(err: str) -> str:
    """The single ``error: ...`` line a refused input must give (no traceback, nothing else)."""
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    return err


def resume(run_dir: Path, capsys) -> tuple[int, str]:
    code = train.main(["--resume", str(run_dir)])
    return code, capsys.readouterr().err


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "experiments" / name), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )


# -- a crafted checkpoint is refused by every reader, and nothing in it runs -----------------------


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.__name__)
def test_the_crafted_checkpoint_would_run_code_if_unpickled(run_dir, tmp_path, payload):
    """The payload is real: the unsafe loader creates the marker (so the tests below mean something)."""
    marker = tmp_path / "unsafe-marker"
    state = load_checkpoint(checkpoint(run_dir))
    state["updates"]["extra"] = payload(marker)
    torch.save(state, checkpoint(run_dir))
    torch.load(checkpoint(run_dir), weights_only=False)  # what the code did before: runs the payload
    assert marker.exists()


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.__name__)
def test_a_checkpoint_holding_a_pickled_callable_is_refused_everywhere(run_dir, tmp_path, capsys, payload):
    marker = tmp_path / "marker"
    path = checkpoint(run_dir)
    state = load_checkpoint(path)
    state["model"] = {**state["model"], "evil": payload(marker)}  # deep inside, next to real weights
    torch.save(state, path)
    refused = f"{path}: refused, it holds more than tensors and plain values"

    with pytest.raises(CheckpointError, match="refused") as caught:
        load_checkpoint(path)
    assert str(caught.value).startswith(refused) and "\n" not in str(caught.value)
    with pytest.raises(CheckpointError, match="refused"):
        load_run(run_dir)
    with pytest.raises(CheckpointError, match="refused"):
        read_run(run_dir)

    code, err = resume(run_dir, capsys)
    assert code == 2 and refused in one_line(err)

    assert path_study.main([str(run_dir)]) == 2
    assert refused in one_line(capsys.readouterr().err)

    result = script("path_study.py", str(run_dir))
    assert result.returncode == 2 and refused in one_line(result.stderr)
    assert result.stdout == ""

    assert not marker.exists()


def test_a_top_level_foreign_object_is_refused_too(run_dir, tmp_path):
    marker = tmp_path / "marker"
    torch.save(Touch(marker), checkpoint(run_dir))  # the whole file is the payload
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(checkpoint(run_dir))
    assert not marker.exists()


# -- a crafted or malformed trace is refused by depth_report.py ----------------------------------


def write_trace(run_dir: Path, **replace) -> Path:
    path = run_dir / "traces" / "greedy.npz"
    with np.load(path) as good:
        arrays = {name: good[name] for name in good.files}
    arrays.update(replace)
    path.unlink()
    np.savez(path, **arrays)  # np.savez pickles object arrays (allow_pickle defaults to True on save)
    return path


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.__name__)
def test_a_trace_holding_a_pickled_callable_is_refused(run_dir, tmp_path, capsys, payload):
    marker = tmp_path / "marker"
    path = write_trace(run_dir, label=np.array([payload(marker)] * 3, dtype=object))
    with np.load(path, allow_pickle=True) as unsafe:  # the payload is real
        unsafe["label"]
    assert marker.exists()
    marker.unlink()

    with pytest.raises(TraceError, match="cannot read 'label'.*allow_pickle=False"):
        read_trace(run_dir, "greedy")
    assert depth_report.main([str(run_dir)]) == 2
    assert f"{path}: cannot read 'label'" in one_line(capsys.readouterr().err)
    result = script("depth_report.py", str(run_dir))
    assert result.returncode == 2 and f"{path}: cannot read 'label'" in one_line(result.stderr)
    assert not marker.exists()


def test_a_pickle_posing_as_a_trace_is_refused(run_dir, tmp_path, capsys):
    marker = tmp_path / "marker"
    path = run_dir / "traces" / "greedy.npz"
    path.write_bytes(pickle.dumps(Touch(marker)))
    assert depth_report.main([str(run_dir)]) == 2
    assert f"{path}: cannot read as .npz" in one_line(capsys.readouterr().err)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        ({"label": np.zeros(3, dtype=np.float32)}, "'label' must be 1-dimensional of kind iu, got float32 (3,)"),
        ({"correct": np.zeros((359, 2), dtype=bool)}, "'correct' must be 1-dimensional"),
        ({"loss": np.zeros(5, dtype=np.float32)}, "'loss' has 5 rows, 'label' has 359"),
        ({"actions": np.zeros((359, 7), dtype=np.int64)}, "'actions' must have 3 columns"),
    ],
    ids=["dtype", "shape", "rows", "columns"],
)
def test_a_malformed_trace_is_one_line(run_dir, capsys, replace, message):
    path = write_trace(run_dir, **replace)
    assert depth_report.main([str(run_dir)]) == 2
    assert f"{path}: {message}" in one_line(capsys.readouterr().err)


def test_a_missing_or_unreadable_trace_is_one_line(run_dir, tmp_path, capsys):
    path = run_dir / "traces" / "greedy.npz"
    path.write_bytes(b"not a zip file")
    assert depth_report.main([str(run_dir)]) == 2
    assert f"{path}: cannot read as .npz" in one_line(capsys.readouterr().err)
    path.unlink()
    assert depth_report.main([str(run_dir)]) == 2
    assert f"{path}: no such trace file" in one_line(capsys.readouterr().err)
    assert depth_report.main([str(tmp_path / "nowhere")]) == 2
    assert "no such run directory" in one_line(capsys.readouterr().err)
    assert depth_report.main([str(run_dir), "--policy", "../../etc/passwd"]) == 2
    assert "expected a name such as greedy" in one_line(capsys.readouterr().err)


def test_a_good_trace_is_reported(finished_run, capsys):
    assert depth_report.main([str(finished_run)]) == 0
    assert "359 samples" in capsys.readouterr().out


# -- a malformed checkpoint is one line naming the file and the entry, before any step ----------


def _numpy_position(state, position):
    kind, keys, _, has_gauss, cached = state["random"]["numpy"]
    state["random"]["numpy"] = (kind, keys, position, has_gauss, cached)


def _first(mapping):
    return next(iter(mapping))


def _laughs(levels: int = 9) -> list:
    """Ten references to ten references to ... one list: a few bytes pickled, 10**levels items in a full repr."""
    nest: list = ["x"]
    for _ in range(levels):
        nest = [nest] * 10
    return nest


MALFORMED = {
    "state is a list": (lambda s: [s["model"]], "not a skipjump checkpoint (it holds a list, not a mapping)"),
    "state is a string": (lambda s: "weights", "not a skipjump checkpoint (it holds a str, not a mapping)"),
    "model is a list": (lambda s: {**s, "model": [1, 2]}, "the model is not a mapping of names to tensors"),
    "model holds a string": (
        lambda s: {**s, "model": {**s["model"], _first(s["model"]): "weights"}},
        "the model is not a mapping of names to tensors",
    ),
    "model tensor of the wrong dtype": (
        lambda s: {**s, "model": {k: v.double() for k, v in s["model"].items()}},
        "the model does not match this architecture: shape or dtype mismatch ['embed.position float64 (16, 16) vs "
        "float32 (16, 16)'",
    ),
    "model tensor of the wrong shape": (
        lambda s: {**s, "model": {k: v[:1] if v.dim() else v for k, v in s["model"].items()}},
        "shape or dtype mismatch ['embed.position float32 (1, 16) vs float32 (16, 16)'",
    ),
    "optimizer moment of the wrong shape": (
        lambda s: s["updates"]["network_optimizer"]["state"][0].update(exp_avg=torch.zeros(2, 16)),
        "updates.network_optimizer.state.0.exp_avg: expected float32 (16, 16) like its parameter, got float32 (2, 16)",
    ),
    "optimizer moment of the wrong dtype": (
        lambda s: s["updates"]["network_optimizer"]["state"][0].update(exp_avg=torch.zeros(16, 16, dtype=torch.int64)),
        "updates.network_optimizer.state.0.exp_avg: expected float32 (16, 16) like its parameter, got int64",
    ),
    "optimizer learning rate not a number": (
        lambda s: s["updates"]["network_optimizer"]["param_groups"][0].update(lr="fast"),
        "updates.network_optimizer.param_groups[0].lr: expected a finite number, got 'fast'",
    ),
    "learning rate a billion-item nest of shared lists": (  # the error quotes a bounded repr of it
        lambda s: s["updates"]["network_optimizer"]["param_groups"][0].update(lr=_laughs()),
        "updates.network_optimizer.param_groups[0].lr: expected a finite number, got [[[[...], [...],",
    ),
    "batch order of the wrong dtype": (
        lambda s: s["schedule"]["network"].update(order=s["schedule"]["network"]["order"].float()),
        "schedule.network.order: expected int64 (1078,), got float32 (1078,)",
    ),
    "batch order out of range": (
        lambda s: s["schedule"]["network"].update(order=s["schedule"]["network"]["order"] + 5000),
        "schedule.network.order: not a permutation of 0..1077",
    ),
    "batch position negative": (
        lambda s: s["schedule"]["policy"].update(position=-3),
        "schedule.policy.position: got -3, must be in [0, 1438]",
    ),
    "torch generator state of the wrong dtype": (
        lambda s: s["random"].update(torch=s["random"]["torch"].float()),
        "random.torch: TypeError",
    ),
    # NumPy accepts any position and then reads outside its state: a segmentation fault, not an error
    "numpy generator position out of range": (
        lambda s: _numpy_position(s, 10**9),
        "random.numpy is not a NumPy MT19937 state",
    ),
    "python generator state cut short": (
        lambda s: s["random"].update(python=(3, (1, 2, 3), None)),
        "random.python: ValueError",
    ),
    "logging window of strings": (
        lambda s: s["window"].update(scalars={"train/loss": ["low"]}),
        "window.scalars: expected a mapping of names to lists of numbers",
    ),
    "step not a count": (lambda s: s.update(step=True), "step and policy_updates must be counts"),
}


@pytest.mark.parametrize(("mutate", "message"), MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_checkpoint_is_refused_before_any_step(run_dir, capsys, mutate, message):
    path = checkpoint(run_dir)
    state = load_checkpoint(path)
    changed = copy.deepcopy(state)
    replaced = mutate(changed)  # None: changed in place
    save_checkpoint(path, changed if replaced is None else replaced)
    before = (run_dir / "metrics.jsonl").read_text()
    code, err = resume(run_dir, capsys)
    assert code == 2 and f"error: {path}: " in one_line(err)
    assert message in err
    assert (run_dir / "metrics.jsonl").read_text() == before  # nothing ran, nothing was logged


def test_path_study_refuses_a_model_that_is_not_a_mapping_of_tensors(run_dir, capsys):
    path = checkpoint(run_dir)
    save_checkpoint(path, {**load_checkpoint(path), "model": {"embed.position": "weights"}})
    assert path_study.main([str(run_dir)]) == 2
    assert f"{path}: the model is not a mapping of names to tensors" in one_line(capsys.readouterr().err)
    with pytest.raises(CheckpointError, match="not a mapping of names to tensors"):
        load_run(run_dir)


def test_a_real_checkpoint_mid_window_passes_the_checks(tmp_path):
    """Every entry a real trainer writes (optimizer moments, a non-empty window of paths) is accepted."""
    config = from_dict({}, [*COMMON_TINY, "trainer.steps=20", "trainer.warmup_steps=2", "trainer.log_every=10"])
    run = RunLog(tmp_path / "run", config)
    trainer = build(config, Monitor(run, config.trainer))
    run.open()
    trainer.train(steps=4)  # step 3 is a policy step: its paths are in the window
    state = trainer.state_dict()
    run.close()
    assert state["window"]["paths"] and state["updates"]["policy_optimizer"]["state"]
    save_checkpoint(tmp_path / "last.pt", state)
    fresh = build(config, Monitor(RunLog(tmp_path / "other", config), config.trainer))
    check_state(fresh, load_checkpoint(tmp_path / "last.pt"), tmp_path / "last.pt")


# -- a malformed config is one short line ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- seed\n- 3\n", "expected a mapping of config keys, got ['seed', 3]"),
        ("just a string\n", "expected a mapping of config keys, got 'just a string'"),
        ("seed: [1, 2]\n", "seed: expected int, got [1, 2]"),
    ],
    ids=["list", "string", "nested"],
)
def test_a_config_yaml_that_is_not_a_mapping_is_refused(run_dir, capsys, text, message):
    (run_dir / "config.yaml").write_text(text)
    code, err = resume(run_dir, capsys)
    assert code == 2 and message in one_line(err)
    with pytest.raises(ConfigError, match="expected"):
        load_run(run_dir)
    assert path_study.main([str(run_dir)]) == 2
    assert message in one_line(capsys.readouterr().err)


def test_a_config_yaml_with_a_python_tag_runs_nothing(run_dir, tmp_path, capsys):
    marker = tmp_path / "marker"
    (run_dir / "config.yaml").write_text(f"!!python/object/apply:pathlib.Path.touch [{marker}]\n")
    code, err = resume(run_dir, capsys)
    assert code == 2 and "could not determine a constructor" in one_line(err)
    assert not marker.exists()


def test_a_missing_run_directory_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert path_study.main([str(missing)]) == 2
    assert f"{missing}: no such run directory" in one_line(capsys.readouterr().err)
    code, err = resume(missing, capsys)
    assert code == 2 and f"{missing}: no such run directory" in one_line(err)


@pytest.mark.skipif(not Path("/etc/passwd").is_file(), reason="no /etc/passwd here")
def test_a_config_that_is_some_other_file_quotes_only_a_short_prefix(tmp_path, capsys):
    assert train.main(["--config", "/etc/passwd", "--run-dir", str(tmp_path / "run")]) == 2
    err = one_line(capsys.readouterr().err)
    assert len(err) < 300 and err.startswith("error: /etc/passwd: expected a mapping of config keys")
    assert Path("/etc/passwd").read_text().strip() not in err
    assert not (tmp_path / "run").exists()


# -- a run that cannot be written fails cleanly ------------------------------------------------


def test_an_unwritable_run_directory_is_one_line_before_any_training(tmp_path, capsys):
    assert train.main(["--config", CONFIG, "--run-dir", "/proc/skipjump-run", *TINY]) == 2
    err = one_line(capsys.readouterr().err)
    assert "cannot write the run directory /proc/skipjump-run" in err

    regular = tmp_path / "file"
    regular.write_text("a file, not a directory")
    below = regular / "run"
    assert train.main(["--config", CONFIG, "--run-dir", str(below), *TINY]) == 2
    assert f"cannot write the run directory {below}" in one_line(capsys.readouterr().err)
    assert regular.read_text() == "a file, not a directory"


def test_a_full_disk_mid_run_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    """fsync fails with ENOSPC from the third checkpoint on (step 4; steps 0 and 2 were written)."""
    run_dir = tmp_path / "run"
    path = checkpoint(run_dir)
    calls = []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")  # as a real failed write: no file name
        os.fsync(fd)

    only_fsync = types.SimpleNamespace(**{**vars(os), "fsync": fsync})
    monkeypatch.setattr(skipjump.checkpoint, "os", only_fsync)
    assert train.main(["--config", CONFIG, "--run-dir", str(run_dir), *WRITES]) == 1
    err = one_line(capsys.readouterr().err)
    assert f"step 4: cannot write {path}: No space left on device" in err
    assert f"the last good checkpoint is kept in {path}" in err
    assert load_checkpoint(path)["step"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary left behind

    monkeypatch.undo()  # space again: the run continues from step 2
    assert train.main(["--resume", str(run_dir)]) == 0
    assert load_checkpoint(path)["step"] == 6


@pytest.mark.parametrize("named", [True, False], ids=["open-fails", "write-fails"])
def test_a_failed_metrics_write_mid_run_is_one_line(tmp_path, capsys, monkeypatch, named):
    run_dir = tmp_path / "run"
    scalars = RunLog.scalars

    def full(self, step, values):
        if step >= 4:
            filename = str(self.dir / "metrics.jsonl") if named else None
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        scalars(self, step, values)

    monkeypatch.setattr(RunLog, "scalars", full)
    assert train.main(["--config", CONFIG, "--run-dir", str(run_dir), *WRITES]) == 1
    err = one_line(capsys.readouterr().err)
    where = run_dir / "metrics.jsonl" if named else f"the run directory {run_dir}"
    assert f"error: step 4: cannot write {where}: No space left on device" in err
    assert f"the last good checkpoint is kept in {checkpoint(run_dir)}" in err
    assert load_checkpoint(checkpoint(run_dir))["step"] == 2  # step 4 logs before it saves


def test_a_run_written_before_a_default_changed_loads_with_what_it_trained_with(run_dir):
    from skipjump.runs import read_run

    assert read_run(run_dir)[0].agent.teacher == "full_depth"  # written with today's defaults: as written
    path = run_dir / "config.yaml"
    text = path.read_text()
    older = "\n".join(line for line in text.splitlines() if "teacher:" not in line and "policy_rows:" not in line)
    path.write_text(older)
    config = read_run(run_dir)[0]
    assert (config.agent.teacher, config.trainer.policy_rows) == ("labels", "held_out")
    assert read_run(run_dir, ["agent.teacher=full_depth", "trainer.policy_rows=all"])[0].agent.teacher == "full_depth"
    blockdrop = older.replace("reward: compute_minus_loss", "reward: blockdrop")  # refused with the teacher
    path.write_text(blockdrop.replace("target_compute: 0.58", "target_compute: null"))
    assert read_run(run_dir)[0].agent.reward == "blockdrop"
