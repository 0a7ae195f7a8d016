import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_speed_prints_its_ratios_as_json():
    args = ["--batch", "8", "--seq", "8", "--dims", "32", "--repeats", "2", "--json"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "bench_speed.py"), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    ratios = json.loads(result.stdout)
    assert ratios["layer_execution_fraction"] == 0.5
    assert 0.5 < ratios["compute_fraction"] < 1.0
    for key in ("routing_overhead", "skip_speedup", "skip_efficiency", "masked_speedup"):
        assert isinstance(ratios[key], float)
    assert set(ratios["seconds"]) == {"plain", "full", "skip", "masked"}
