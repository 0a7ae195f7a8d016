import pytest
import torch
from conftest import tiny_stack

from skipjump import JumpStack, Routing, enumerate_paths, path_to_actions
from skipjump.evaluate import match_random_p, path_compute_fraction, random_compute_fraction


def make_stack() -> JumpStack:
    return tiny_stack(num_layers=8, max_jump=3, dtype=torch.float32)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.7, 1.0])
def test_random_compute_fraction_matches_sampled_random_routing(p):
    stack = make_stack()
    with torch.no_grad():
        _, trace = stack(torch.randn(4000, 3, 16), routing=Routing("random", p=p))
    sampled = float(trace.compute_fraction.mean())
    assert random_compute_fraction(stack, 3, p) == pytest.approx(sampled, abs=0.01)


def test_random_skipping_can_match_any_compute_between_the_longest_jumps_and_full_depth():
    stack = make_stack()
    longest_jumps = path_compute_fraction(stack, 3, (0, 4, 7))  # p = 1: every decision jumps 3
    assert random_compute_fraction(stack, 3, 1.0) == pytest.approx(longest_jumps)
    assert match_random_p(stack, 3, longest_jumps - 0.01) == 1.0
    for target in (longest_jumps + 0.01, 0.5, 0.8, 0.99):
        p = match_random_p(stack, 3, target)
        assert random_compute_fraction(stack, 3, p) == pytest.approx(target, abs=1e-6)


def test_path_compute_fraction_matches_the_trace():
    stack = make_stack()
    for path in enumerate_paths(8, 3)[:5]:
        _, trace = stack(torch.randn(1, 3, 16), routing=Routing("fixed", actions=path_to_actions(path, 8, 3)))
        assert path_compute_fraction(stack, 3, path) == pytest.approx(float(trace.compute_fraction))
