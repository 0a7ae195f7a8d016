"""Data-parallel training on the CPU with gloo: 2 ranks against 1, a torchrun run directory, resume, SIGTERM."""

import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import CONFIG, ROOT, TINY, tiny_config

from skipjump.config import ConfigError
from skipjump.distributed import Ranks, pick_device, setup, teardown
from skipjump.stack import Routing
from skipjump.trainer import build
from skipjump.updates import NonFiniteError

TRAIN = str(ROOT / "experiments" / "train.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, out: Path, overrides: tuple, steps: int) -> None:
    """One rank: train ``steps`` steps of the tiny config, then sample paths for the first test
    inputs; save the weights, lam and those paths."""
    trainer = build(tiny_config(*overrides), ranks=Ranks(rank, world))
    trainer.train(steps)
    with torch.no_grad():
        _, trace = trainer.model(trainer.task.test.inputs[:64], Routing("sample"))
    state = {"model": trainer.model.state_dict(), "lam": trainer.updates.agent.lam, "actions": trace.actions}
    torch.save(state, out / f"rank{rank}.pt")


def _average_worker(rank: int, world: int, out: Path) -> None:
    """Three parameters: a gradient on both ranks, on rank 0 only (rank 1 skipped its layer), on none."""
    params = [torch.nn.Parameter(torch.zeros(3)) for _ in range(3)]
    params[0].grad = torch.full((3,), 2.0 + rank)
    if rank == 0:
        params[1].grad = torch.tensor([4.0, -2.0, 6.0])
    Ranks(rank, world).average_gradients(params)
    torch.save([p.grad for p in params], out / f"rank{rank}.pt")


def _rank(rank: int, worker, world: int, port: int, out: Path, join: bool, *args) -> None:
    """A spawned process: torchrun's environment for ``rank``, the gloo group joined as train.py joins
    it (unless ``join`` is False: the worker joins it itself), then ``worker(rank, world, out, *args)``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank))
    os.environ.update(WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    if join:
        setup("cpu")
    try:
        worker(rank, world, out, *args)
    finally:
        if join:
            teardown()


def spawn(worker, tmp_path: Path, world: int, *args, suffix: str = "pt", join: bool = True) -> list:
    """Run ``worker`` on ``world`` ranks and read what each saved; fail, not hang, if a rank is left waiting.
    A port taken by another process between ``free_port`` and rank 0's bind is retried with a new one."""
    for attempt in range(3):
        context = mp.spawn(_rank, args=(worker, world, free_port(), tmp_path, join, *args), nprocs=world, join=False)
        deadline = time.monotonic() + 120
        try:
            while not context.join(timeout=1):
                if time.monotonic() > deadline:
                    for process in context.processes:
                        process.kill()
                    pytest.fail("a rank was left waiting")
            break
        except mp.ProcessRaisedException as error:
            if "EADDRINUSE" not in str(error) or attempt == 2:
                raise
    read = torch.load if suffix == "pt" else Path.read_text
    return [read(tmp_path / f"rank{r}.{suffix}") for r in range(world)]


def _nan_worker(rank: int, world: int, out: Path, nan_at: int) -> None:
    """Rank 1's task loss and divergence from full depth (what the reward reads) turn NaN at step ``nan_at``,
    rank 0's never do."""
    trainer = build(tiny_config("trainer.batch_size=8"), ranks=Ranks(rank, world))
    if rank == 1:
        task, loss, divergence = trainer.task, trainer.task.per_sample_loss, trainer.task.divergence
        task.per_sample_loss = lambda o, t: loss(o, t) * (math.nan if trainer.step == nan_at else 1.0)
        task.divergence = lambda o, r: divergence(o, r) * (math.nan if trainer.step == nan_at else 1.0)
    try:
        trainer.train()
        outcome = "finished"
    except NonFiniteError as error:
        outcome = str(error)
    (out / f"rank{rank}.txt").write_text(outcome)


@pytest.mark.parametrize("nan_at", [4, 13])  # a supervised and a policy step (2 warm-up steps, then alternating)
def test_a_nan_on_one_rank_stops_every_rank_at_the_same_step(tmp_path, nan_at):
    outcomes = spawn(_nan_worker, tmp_path, 2, nan_at, suffix="txt")
    assert all(o.startswith(f"step {nan_at}: non-finite") and "some rank" in o for o in outcomes), outcomes


def run_ranks(tmp_path: Path, world: int, overrides: tuple, steps: int) -> list[dict]:
    return spawn(_worker, tmp_path, world, overrides, steps)


def test_gradients_are_averaged_with_zeros_where_a_rank_has_none(tmp_path):
    for grads in spawn(_average_worker, tmp_path, 2):
        assert torch.equal(grads[0], torch.full((3,), 2.5))  # (2 + 3) / 2
        assert torch.equal(grads[1], torch.tensor([2.0, -1.0, 3.0]))  # rank 1 counts as zeros
        assert grads[2] is None  # unused on every rank: no gradient, as under DDP


def network(state: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if ".policy." not in k}


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).nan_to_num().abs().max()) for k in a)


@pytest.mark.parametrize(
    "attention, steps",
    [
        (True, 1),
        # Over several steps without attention: its key bias has an exactly zero gradient (softmax
        # ignores a shift), Adam turns that bias's rounding noise into lr-sized steps, and any two
        # summation orders part there. Every other parameter has a real gradient.
        (False, 10),
    ],
)
def test_two_ranks_follow_one_rank_at_twice_the_batch(tmp_path, attention, steps):
    """Full-depth supervised steps (fixed paths): 2 ranks x 8 rows move the network as 1 rank x 16 rows."""
    schedule = ("trainer.steps=20", "trainer.warmup_steps=10", f"model.attention={str(attention).lower()}")
    ranks = run_ranks(tmp_path, 2, ("trainer.batch_size=8", *schedule), steps=steps)
    one = build(tiny_config("trainer.batch_size=16", *schedule))
    start = {k: v.clone() for k, v in one.model.state_dict().items()}
    one.train(steps)
    half = build(tiny_config("trainer.batch_size=8", *schedule))
    half.train(steps)
    reference = network(one.model.state_dict())
    assert max_difference(network(ranks[0]["model"]), reference) < 1e-6
    assert max_difference(network(ranks[1]["model"]), reference) < 1e-6
    assert max_difference(reference, network(start)) > 1e-3  # the trajectory went somewhere
    assert max_difference(network(half.model.state_dict()), reference) > 1e-4  # and the batch size shows


def test_ranks_sample_their_own_paths_and_end_identical(tmp_path):
    """With sampled paths and policy steps, every rank ends with the same weights and lam."""
    ranks = run_ranks(tmp_path, 2, ("trainer.batch_size=8", "trainer.steps=16", "trainer.warmup_steps=4"), steps=16)
    assert max_difference(ranks[0]["model"], ranks[1]["model"]) < 1e-6
    assert float(ranks[0]["lam"]) == pytest.approx(float(ranks[1]["lam"]))
    assert float(ranks[0]["lam"]) != pytest.approx(0.1)  # lam moved (its starting value is 0.1)
    assert not torch.equal(ranks[0]["actions"], ranks[1]["actions"])  # same weights and inputs, own streams


def workers(job: subprocess.Popen) -> list[int]:
    """The pids of the processes torchrun started."""
    found = subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True).stdout.split()
    return sorted(int(pid) for pid in found)


@pytest.fixture
def torchrun():
    """Start ``torchrun --nproc_per_node=N experiments/train.py ARGS`` (one thread per rank); a job still
    running when the test ends (a failed test, a rank left waiting) is killed, never left behind."""
    jobs = []

    def start(nproc: int, *args: str) -> subprocess.Popen:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        command = [*TORCHRUN, f"--nproc_per_node={nproc}", TRAIN, *args]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        jobs.append(subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True, **pipes))
        return jobs[-1]

    yield start
    for job in jobs:
        if job.poll() is None:
            for pid in [*workers(job), job.pid]:  # torchrun starts each rank in a session of its own
                os.kill(pid, signal.SIGKILL)
            job.wait()


def logged_steps(run: Path) -> list[int]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [line["step"] for line in lines if "train/loss" in line]


def test_two_rank_run_writes_one_run_directory_and_resumes_on_one_rank(tmp_path, torchrun):
    run = tmp_path / "run"
    schedule = [
        "trainer.warmup_steps=10",
        "trainer.log_every=5",
        "trainer.eval_every=15",
        "trainer.checkpoint_every=10",
    ]
    job = torchrun(2, "--config", CONFIG, "--run-dir", str(run), *TINY, "trainer.steps=30", *schedule)
    out, err = job.communicate(timeout=240)
    assert job.returncode == 0, err[-2000:]
    assert out.count("policy            accuracy") == 1  # one evaluation, printed once
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert logged_steps(run) == [5, 10, 15, 20, 25, 30]
    assert json.loads((run / "summary.json").read_text())["step"] == 30
    assert torch.load(run / "checkpoints" / "last.pt")["step"] == 30

    resumed = subprocess.run(
        [sys.executable, TRAIN, "--resume", str(run), "trainer.steps=40", "trainer.batch_size=32"],  # same global batch
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert logged_steps(run) == [5, 10, 15, 20, 25, 30, 35, 40]  # none lost, none repeated
    assert torch.load(run / "checkpoints" / "last.pt")["step"] == 40
    assert "batch_size: 32" in (run / "config.yaml").read_text() and "note:" not in resumed.stdout
    again = subprocess.run(
        [sys.executable, TRAIN, "--resume", str(run), "trainer.steps=45", "trainer.batch_size=16"],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0 and "note: the run took 32 rows per step over all ranks, now 16" in again.stdout


def _train_worker(rank: int, world: int, out: Path, args: list[str]) -> None:
    """One rank of experiments/train.py, started as a launcher without an agent (srun, say) would:
    it joins the group itself, from the environment."""
    import train

    (out / f"rank{rank}.code").write_text(str(train.main(args)))


def _teardown_worker(rank: int, world: int, out: Path) -> None:
    """Join the group, build a trainer (its optimisers), leave the group: which threads are left?"""
    build(tiny_config(), ranks=setup("cpu"))
    teardown()
    deadline = time.monotonic() + 5.0  # gloo's loop thread exits shortly after the group is destroyed, not at once
    while True:
        names = []
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that ended while being listed
                names.append((task / "comm").read_text().strip())
        if not any(n.startswith(("gloo", "tcpstore")) for n in names) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    (out / f"rank{rank}.txt").write_text(" ".join(sorted(names)))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="thread names are read from Linux's /proc")
def test_teardown_stops_the_groups_threads(tmp_path):
    """A group that outlives teardown keeps gloo's threads, and one that frees a tensor while Python
    exits aborts the process now and then (SIGABRT): what an optimiser built after joining caused."""
    for threads in spawn(_teardown_worker, tmp_path, 2, suffix="txt", join=False):
        assert "gloo" not in threads and "tcpstore" not in threads, threads


def test_a_problem_on_rank_0_alone_stops_every_rank(tmp_path):
    """Rank 0 cannot create the run directory (its parent is a file). Without torchrun's agent to
    kill it, rank 1 would wait for rank 0 in a collective; it must stop by itself, with exit 2."""
    (tmp_path / "file").write_text("")
    args = [
        "--config",
        CONFIG,
        "--run-dir",
        str(tmp_path / "file" / "run"),
        *TINY,
        "trainer.steps=30",
        "trainer.warmup_steps=5",
    ]
    assert spawn(_train_worker, tmp_path, 2, args, suffix="code", join=False) == ["2", "2"]


@pytest.mark.parametrize("target", ["job", "one rank"])
def test_sigterm_stops_every_rank_at_the_same_step(tmp_path, target, torchrun):
    """SIGTERM to torchrun (which passes it to every rank) or to rank 1 alone: both ranks stop after
    one step, one checkpoint holds it, and nothing waits in a collective."""
    run = tmp_path / "run"
    schedule = ["trainer.steps=100000", "trainer.warmup_steps=10", "trainer.log_every=5", "trainer.eval_every=0"]
    job = torchrun(2, "--config", CONFIG, "--run-dir", str(run), *TINY, *schedule)
    deadline = time.monotonic() + 120
    metrics = run / "metrics.jsonl"
    while not metrics.exists() or metrics.read_text().count("\n") < 4:  # well into training
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()[1][-2000:]
        time.sleep(0.2)
    if target == "job":
        job.send_signal(signal.SIGTERM)
    else:
        os.kill(workers(job)[-1], signal.SIGTERM)
    out, err = job.communicate(timeout=60)  # no rank left waiting in a collective
    stopped = [int(step) for step in re.findall(r"stopped at step (\d+)", out + err)]
    assert len(stopped) == 2 and stopped[0] == stopped[1], out + err[-2000:]
    assert torch.load(run / "checkpoints" / "last.pt")["step"] == stopped[0]
    assert logged_steps(run)[-1] <= stopped[0]


def test_one_process_without_torchrun_is_one_rank_on_the_cpu(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ranks = setup("auto")
    assert (ranks.rank, ranks.world, ranks.main) == (0, 1, True)
    if not torch.cuda.is_available():
        assert ranks.device.type == "cpu"
        with pytest.raises(ConfigError, match="trainer.device: cuda, but this torch .* sees no CUDA device"):
            pick_device("cuda")


def test_bf16_autocast_trains_in_bfloat16(make_trainer):
    """The option changes the arithmetic (the weights part from float32's) and training stays finite."""
    runs = {}
    for precision in ("float32", "bf16"):
        trainer = make_trainer(f"trainer.precision={precision}", "trainer.steps=8", "trainer.warmup_steps=4")
        with trainer.updates._autocast():
            dtype = trainer.model.stack.final_mlp(torch.zeros(1, 16)).dtype
        trainer.train()
        trainer.updates.check_parameters()
        runs[precision] = (dtype, network(trainer.model.state_dict()))
    assert runs["float32"][0] == torch.float32 and runs["bf16"][0] == torch.bfloat16
    assert max_difference(runs["float32"][1], runs["bf16"][1]) > 1e-4


def test_gpu_smoke_runs_on_the_cpu_and_refuses_a_missing_gpu(tmp_path):
    out = tmp_path / "smoke.txt"
    args = ["--device", "cpu", "--steps", "4", "--repeats", "1", "--batches", "4", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "gpu_smoke.py"), *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = out.read_text().splitlines()
    assert lines[0].startswith("# python") and "torch" in lines[1] and lines[2] == "# device: CPU"
    assert [line.split()[:2] for line in lines[3:5]] == [["train", "float32"], ["train", "bf16"]]
    assert "steps/s" in lines[3] and "greedy" in lines[3] and "skip" in lines[5] and "efficiency" in lines[5]
    if not torch.cuda.is_available():
        refused = subprocess.run(
            [sys.executable, str(ROOT / "experiments" / "gpu_smoke.py")], capture_output=True, text=True
        )
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "no CUDA device" in refused.stderr


def test_bench_ddp_prints_samples_per_second_for_one_and_two_ranks(tmp_path):
    out = tmp_path / "ddp.json"
    tiny = [o for o in TINY if "batch_size" not in o]  # the script sets the batch
    args = ["--steps", "6", "--repeats", "1", "--global-batch", "8", "--out", str(out), *tiny]
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "bench_ddp.py"), *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [(s["ranks"], s["global_batch"]) for s in result["settings"]] == [(1, 8), (2, 8), (2, 16)]
    assert all(s["samples_per_second"] > 0 for s in result["settings"])
    assert "samples/s" in done.stdout and result["torch"] == torch.__version__
