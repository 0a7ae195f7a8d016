import json
import subprocess
import sys

import bench_compile
import bench_run
import bench_sampling
import bench_speed
import profile_step
import pytest
import torch
import train
from conftest import CONFIG, ROOT, TINY, needs_cxx

from skipjump import Routing, StackConfig, enumerate_paths
from skipjump.runs import load_run


@pytest.fixture
def one_thread():
    """These tests run on one thread (a busy machine cannot stall it); the session's setting comes back after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_script(name, *args):
    return subprocess.run([sys.executable, str(ROOT / "experiments" / name), *args], capture_output=True, text=True)


@pytest.mark.parametrize("layers", [6, 12])
def test_skip_pattern_runs_half_of_the_layer_executions_at_any_depth(layers, one_thread):
    case = bench_speed.make_case(layers, batch=6, seq=4, dims=16)
    assert case.execution_fraction == 0.5
    _, trace = case.stack(case.x, routing=Routing("fixed", actions=case.actions))
    paths = trace.paths()
    assert paths[0::2] == [paths[0]] * 3 and paths[1::2] == [paths[1]] * 3  # two patterns, alternating
    assert len(paths[0]) + len(paths[1]) == layers
    assert not set(paths[0][1:-1]) & set(paths[1][1:-1])  # complementary inside
    valid = set(enumerate_paths(layers, 2))  # reachable even with max_jump 2
    assert paths[0] in valid and paths[1] in valid
    narrow = StackConfig(dims=16, heads=2, num_layers=layers, max_jump=2)
    assert bench_speed.skip_actions(narrow, 4).shape == (4, layers - 1)  # path_to_actions raises if unreachable


@pytest.mark.parametrize("layers", [6, 12])
def test_variants_compute_the_same_outputs(layers, one_thread):
    case = bench_speed.make_case(layers, batch=6, seq=4, dims=16)
    with torch.no_grad():
        out = {name: fn() for name, fn in case.variants().items()}
    torch.testing.assert_close(out["full"], out["plain"])
    torch.testing.assert_close(out["skip"], out["masked"])  # the same paths, jump mix included
    assert not torch.allclose(out["skip"], out["full"])  # the pattern really skips


def test_bench_speed_at_depth_12_prints_its_ratios_and_writes_them_with_how_they_were_made(tmp_path):
    out = tmp_path / "results" / "speed.json"
    args = ["--layers", "12", "--batch", "8", "--seq", "8", "--dims", "32", "--repeats", "2", "--threads", "1"]
    result = run_script("bench_speed.py", *args, "--json", "--out", str(out))
    assert result.returncode == 0, result.stderr
    ratios = json.loads(result.stdout)
    assert ratios == json.loads(out.read_text())
    assert ratios["layers"] == 12 and ratios["layer_execution_fraction"] == 0.5
    assert 0.5 < ratios["compute_fraction"] < 1.0
    assert ratios["ideal_speedup"] == pytest.approx(1 / ratios["compute_fraction"])
    s = ratios["seconds"]
    assert set(s) == {"plain", "full", "skip", "masked"} and all(t > 0 for t in s.values())
    assert ratios["routing_overhead"] == pytest.approx(s["full"] / s["plain"] - 1)
    assert ratios["skip_efficiency"] == pytest.approx(s["full"] / s["skip"] / ratios["ideal_speedup"])
    assert "bench_speed.py --layers 12" in ratios["command"] and ratios["threads"] == 1
    assert ratios["torch"] == torch.__version__ and ratios["date"][:2] == "20"


def test_bench_speed_sweep_covers_every_depth_and_batch(capsys, one_thread):
    assert bench_speed.main(["--sweep", "--seq", "2", "--dims", "8", "--repeats", "1", "--threads", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    cells = result["cells"]
    assert [(c["layers"], c["batch"]) for c in cells] == [(d, b) for d in (6, 12, 24) for b in (8, 64, 256)]
    for c in cells:
        assert c["layer_execution_fraction"] == 0.5 and c["repeats"] == 1
        s = c["seconds"]
        assert c["skip_efficiency"] == pytest.approx(s["full"] / s["skip"] * c["compute_fraction"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("bench") / "run"
    short = ["trainer.steps=12", "trainer.warmup_steps=6", "trainer.log_every=6", "trainer.eval_every=12"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the timing tests: a busy machine cannot stall it
    try:
        assert train.main(["--config", CONFIG, "--run-dir", str(run_dir), *TINY, *short]) == 0
    finally:
        torch.set_num_threads(threads)
    return run_dir


def test_bench_run_times_greedy_against_full_depth_at_three_batch_sizes(tiny_run, tmp_path, capsys, one_thread):
    out = tmp_path / "results" / "run.json"
    assert bench_run.main([str(tiny_run), "--repeats", "1", "--threads", "1", "--json", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads(out.read_text())
    _, task, model = load_run(tiny_run)
    n = len(task.test)
    assert result["test_inputs"] == n and result["threads"] == 1
    assert [(r["batch"], r["batch_size"]) for r in result["batches"]] == [("1", 1), ("64", 64), ("all", n)]
    with torch.no_grad():
        compute = model(task.test.inputs, "greedy")[1].compute_fraction
    for r, inputs in zip(result["batches"], [64, 64, n]):  # batch 1 runs the first 64 inputs one by one
        assert r["inputs"] == inputs and 0 < r["compute_fraction"] <= 1
        assert r["compute_fraction"] == pytest.approx(float(compute[:inputs].mean()), rel=1e-4)
        assert r["ideal"] == pytest.approx(1 / r["compute_fraction"])
        assert r["speedup"] == pytest.approx(r["full_ms"] / r["greedy_ms"])
        assert r["efficiency"] == pytest.approx(r["speedup"] / r["ideal"])
    with torch.no_grad():
        executed = model(task.test.inputs[:64], "greedy")[1].executed
    for label in ("1", "64"):  # the same 64 inputs, one by one and as one batch
        part, ideal = result["parts"][label], 1 / float(compute[:64].mean())
        assert part["rows_per_layer"] == executed.sum(dim=0).tolist()
        ms, routing_full = part["ms"], part["routing_ms_full"]
        assert routing_full == pytest.approx(ms["full"] - ms["layers_at_full_depth"])
        free = ms["full"] / (ms["layers_at_greedy_rows"] + routing_full) / ideal
        assert part["free_routing_efficiency"] == pytest.approx(free, rel=1e-4)


def test_bench_run_on_a_bad_run_dir_exits_2_with_one_line(tmp_path, capsys):
    result = run_script("bench_run.py", str(tmp_path / "missing"))  # the real exit status, in a subprocess
    assert result.returncode == 2
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"bench_run.py: {tmp_path / 'missing'}")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("model: {dims: -1}\n")
    assert bench_run.main([str(run_dir)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("bench_run.py: ")


def test_bench_sampling_counts_the_layer_rows_run_once_per_state(tiny_run, tmp_path, capsys, one_thread):
    out = tmp_path / "sampling.json"
    assert bench_sampling.main([str(tiny_run), "--repeats", "1", "--samples", "2", "4", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["samples"] for r in result["results"]] == [2, 4] and result["threads"] == 1
    for r in result["results"]:
        assert r["speedup"] == pytest.approx(r["apart_ms"] / r["shared_ms"]) and 0 < r["rows"] < 1
    _, task, model = load_run(tiny_run)
    seen = []
    for layer in model.stack.layers:
        layer.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    with torch.no_grad():
        _, trace = model.train()(task.test.inputs[:16], Routing("sample", samples=4))
    assert bench_sampling.distinct_states(trace, 4) == sum(seen) < int(trace.executed.sum())
    assert bench_sampling.main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("bench_sampling.py: ")


def test_profile_step_splits_supervised_and_policy_steps_and_writes_its_report(tiny_run, tmp_path, capsys, one_thread):
    out = tmp_path / "profile.txt"
    profile_step.main(["--config", CONFIG, "--steps", "2", "--rows", "20", "--out", str(out), *TINY])
    text = out.read_text()
    assert text == capsys.readouterr().out
    assert text.startswith("# python")  # how it was made
    supervised, policy = text.split("## supervised steps: ")[1].split("## policy steps: ")
    for part in (supervised, policy):
        step_ms = float(part.split(" ms per step")[0])
        layers_ms = float(part.split("in the stack's layers (forward): ")[1].split(" ms")[0])
        assert 0 < layers_ms < step_ms
        assert "aten::addmm" in part  # the layers' matrix products, profiled
    rates = supervised.split("matrix products: ")[1].split(" GFLOP/s")
    assert 0 < float(rates[0].split("so ")[1]) < float(rates[1].split("runs at ")[1])  # slower than one product
    assert "matrix products" not in policy
    profile_step.main(["--run", str(tiny_run), "--steps", "1", "--rows", "3"])  # a trained run's policy
    assert "## policy steps: " in capsys.readouterr().out
    backward = [float(part.split("backward pass: ")[1].split(" ms")[0]) for part in (supervised, policy)]
    assert backward[0] > backward[1]  # a policy step backpropagates into the small policy only


@needs_cxx
def test_bench_compile_times_both_step_kinds_with_and_without_compiled_layers(tmp_path, one_thread):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # so that the graphs counted below are this run's
    out = tmp_path / "compile.json"
    result = bench_compile.main(["--config", CONFIG, "--rounds", "1", "--steps", "1", "--out", str(out), *TINY])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    for kind in bench_compile.KINDS:
        row = result[kind]
        assert row["eager_ms"] > 0 and row["compiled_ms"] > 0
        assert row["speedup"] == pytest.approx(row["eager_ms"] / row["compiled_ms"])
    assert result["command"].startswith("python") and result["warm_up_seconds"] > 0
    assert counters["stats"]["unique_graphs"] > 0  # the compiled rounds ran compiled layers
