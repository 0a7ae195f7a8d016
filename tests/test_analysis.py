"""Run analysis: the tables of skipjump.analysis, the notebook executed top to bottom, TensorBoard's
per-action shares and depth images, and the README's figures script."""

import json
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import train
from conftest import CONFIG, ROOT, TINY
from nbclient import NotebookClient
from tensorboard.backend.event_processing.event_accumulator import IMAGES, SCALARS, EventAccumulator

from skipjump import analysis
from skipjump.runs import TraceError, read_trace
from skipjump.tasks.digits import from_patches, to_patches

NOTEBOOK = ROOT / "notebooks" / "skip_behaviour.ipynb"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("analysis") / "run"
    short = ["trainer.steps=40", "trainer.warmup_steps=10", "trainer.log_every=10", "trainer.eval_every=20"]
    assert train.main(["--config", CONFIG, "--run-dir", str(run_dir), *TINY, *short]) == 0
    return run_dir


def events(run_dir: Path, kind: str) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir), size_guidance={kind: 0})
    accumulator.Reload()
    return accumulator


def test_tables_agree_with_the_traces(run_dir):
    greedy = read_trace(run_dir, "greedy")
    rates = analysis.layer_rates(run_dir)
    assert set(rates) == {"greedy", "random_matched", "static_matched"}
    np.testing.assert_allclose(rates["greedy"], greedy["executed"].mean(axis=0))
    assert rates["greedy"][0] == 1.0 and rates["greedy"][-1] == 1.0  # first and last layers always run
    groups = analysis.layers_by_group(run_dir)
    assert groups.by == "class" and sum(len(v) for v in groups.layers.values()) == len(greedy["label"])
    table = analysis.accuracy_by_layers(run_dir)
    assert sum(n for n, _ in table.values()) == len(greedy["label"])
    overall = sum(n * acc for n, acc in table.values()) / len(greedy["label"])
    assert overall == pytest.approx(greedy["correct"].mean())
    shares, distinct = analysis.path_shares(run_dir, top=3)
    assert distinct == len({tuple(row) for row in greedy["executed"]}) and len(shares) <= 3
    assert [s for _, s in shares] == sorted((s for _, s in shares), reverse=True)


def test_event_file_histograms_are_exact_counts(run_dir):
    """Read back from TensorBoard, each logging window's actions equal the shares logged beside them."""
    hist = analysis.histograms(run_dir, "jumps/layer0")
    assert set(hist.values) <= {0, 1, 2} and len(hist.steps) >= 2
    scalars = events(run_dir, SCALARS)
    for a, value in enumerate(hist.values):
        logged = {e.step: e.value for e in scalars.Scalars(f"jumps_share/layer0/action{value}")}
        for step, share in zip(hist.steps, hist.shares()[:, a]):
            assert share == pytest.approx(logged[step], abs=1e-6)
    depth = analysis.histograms(run_dir, "eval_jumps/depth")
    for table in (hist, depth):  # no value decoded from TensorBoard's empty left bucket
        assert (table.counts.sum(axis=0) > 0).all()
    greedy = read_trace(run_dir, "greedy")  # the last evaluation is the final one's greedy pass
    final = {int(v): int(c) for v, c in zip(depth.values, depth.counts[-1]) if c}
    assert final == {int(v): int(c) for v, c in zip(*np.unique(greedy["layers_executed"], return_counts=True))}
    with pytest.raises(TraceError, match="no histogram 'jumps/nothing'"):
        analysis.histograms(run_dir, "jumps/nothing")


def test_tensorboard_has_share_charts_and_depth_images(run_dir):
    images = events(run_dir, IMAGES)
    assert "eval_jumps/depth_bars" in images.Tags()[IMAGES]
    assert len(images.Images("eval_jumps/depth_bars")) == 2  # at steps 20 and 40
    layout = events(run_dir, SCALARS)
    assert "custom_scalars__config__" in layout.Tags()["tensors"]


def test_training_curves_and_the_oracle_gap(run_dir):
    curves = analysis.training_curves(run_dir, ("policy/lam", "eval/greedy/accuracy"))
    steps, lam = curves["policy/lam"]
    assert list(steps) == [20, 30, 40] and np.isfinite(lam).all()
    assert list(curves["eval/greedy/accuracy"][0]) == [20, 40]
    gap = analysis.oracle_gap(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert gap["oracle_matched"] == summary["oracle_matched"]["accuracy"] >= gap["static_matched"]


def test_extreme_inputs_are_the_test_digits_with_fewest_and_most_layers(run_dir):
    fewest, most = analysis.extreme_inputs(run_dir, count=4)
    layers = read_trace(run_dir, "greedy")["layers_executed"]
    assert [e.layers for e in fewest] == sorted(layers)[:4]
    assert [e.layers for e in most] == sorted(layers, reverse=True)[:4]
    assert fewest[0].image.shape == (8, 8) and 0.0 <= fewest[0].image.min() <= fewest[0].image.max() <= 1.0


def test_patches_round_trip():
    images = torch.rand(3, 8, 8)
    for patch in (1, 2, 4, 8):
        assert torch.equal(from_patches(to_patches(images, patch), patch), images)


def test_newest_run_and_a_missing_summary(run_dir, tmp_path):
    assert analysis.newest_run(run_dir.parent) == run_dir
    assert analysis.newest_run(tmp_path) is None
    with pytest.raises(TraceError, match="summary.json: no such file"):
        analysis.summary(tmp_path)


def test_the_notebook_runs_top_to_bottom(run_dir, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # committed clean
    monkeypatch.setenv("SKIPJUMP_RUN_DIR", str(run_dir))
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": ROOT}})
    client.execute()  # raises CellExecutionError on any cell error
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 7
    assert any(str(run_dir) in o.get("text", "") for o in outputs)


def test_the_notebook_names_the_command_when_there_is_no_run(tmp_path, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells = notebook.cells[:2]
    monkeypatch.delenv("SKIPJUMP_RUN_DIR", raising=False)
    client = NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": tmp_path}})
    with pytest.raises(Exception, match="make demo"):
        client.execute()


def test_figures_script_writes_the_readme_figures(run_dir, tmp_path):
    import figures

    assert figures.main([str(run_dir), "--out", str(tmp_path)]) == 0
    for name in ("layer_rates.png", "jumps_over_training.png", "extreme_inputs.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figures.main([str(tmp_path / "missing")]) == 2
