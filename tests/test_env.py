"""The jump decision as a Gymnasium environment: spaces, equivalence with the model, seeding, errors."""

import json
import warnings

import gymnasium
import numpy as np
import pytest
import torch
import train
from conftest import CONFIG, TINY, tiny_config
from gymnasium.utils.env_checker import check_env

import skipjump  # noqa: F401  (registers the ids)
from skipjump.env import JumpEnv, JumpVectorEnv, load_source
from skipjump.reward import jump_reward
from skipjump.stack import Routing

SIX = ("model.num_layers=6", "model.max_jump=3")
VARIANTS = {  # policy designs and stack options the environment must reproduce
    "state policy": (),
    "head confidence": ("model.policy_confidence=true",),
    "no jump mix": ("model.jump_mix=false",),
    "the seed's input policy": ("model.policy_inputs=input",),
    "the labels teacher": ("agent.teacher=labels", "trainer.policy_rows=held_out"),
}


@pytest.fixture(scope="module")
def source():
    return load_source(config=tiny_config(*SIX))


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request):
    return load_source(config=tiny_config(*SIX, *VARIANTS[request.param]))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("env") / "run"
    assert (
        train.main(["--config", CONFIG, "--run-dir", str(run_dir), *TINY, "trainer.steps=12", "trainer.warmup_steps=4"])
        == 0
    )
    return run_dir


def play(env: JumpEnv, actions: list[int], row: int) -> tuple[float, dict, int]:
    """One episode on ``row`` taking ``actions`` in turn; (return, final info, steps)."""
    env.reset(seed=0, options={"row": row})
    total, steps, done, info = 0.0, 0, False, {}
    while not done:
        _, reward, done, _, info = env.step(actions[steps])
        total, steps = total + reward, steps + 1
    return total, info, steps


def test_the_single_env_passes_gymnasiums_checker(source):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*infinity.*")  # hidden states are unbounded
        check_env(JumpEnv(source=source), skip_render_check=True)


@pytest.mark.parametrize("actions", [[0, 0, 0, 0, 0], [1, 3, 2, 0, 0], [3, 3, 3, 3, 3], [2, 0, 1, 0, 0]])
def test_fixed_actions_give_the_models_logits_and_reward(variant, actions):
    """Stepping the env equals the model's fixed routing (rewards charging no decision) and the
    imitate routing (charging the built-in policy as the trainer does: per decision, or once per
    input for the seed's input policy; with the head's probe when the policy reads it)."""
    source = variant
    model, split, lam, agent = source.model, source.splits["test"], source.lam, source.config.agent
    row = 5
    for decision_flops, mode in ((0.0, "fixed"), (None, "imitate")):
        env = JumpEnv(source=source, split="test", decision_flops=decision_flops)
        total, info, steps = play(env, actions, row)
        taken = torch.as_tensor(info["actions"])[None]
        with torch.no_grad():
            outputs, trace = model(split.inputs[row : row + 1], Routing(mode, actions=taken))
        env_outputs = env.episodes.outputs(torch.zeros(1, dtype=torch.long))
        torch.testing.assert_close(env_outputs, outputs, rtol=1e-5, atol=1e-5)
        loss = source.task.per_sample_loss(outputs, split.targets[row : row + 1])
        if agent.teacher == "full_depth":  # the default: the reward's loss is the divergence from full depth
            with torch.no_grad():
                loss = source.task.divergence(outputs, model(split.inputs[row : row + 1], Routing("full"))[0])
        correct = source.task.correct(outputs, split.targets[row : row + 1])
        expected = jump_reward(trace, loss, correct, kind=agent.reward, lam=lam, gamma=agent.gamma)
        assert total == pytest.approx(float(expected[0]), abs=1e-5)
        assert info["layers"] == int(trace.layers_executed[0]) and steps == int((taken >= 0).sum())
        assert info["compute_fraction"] == pytest.approx(float(trace.compute_fraction[0]), abs=1e-6)


def test_actions_past_the_last_layer_land_on_it(source):
    """From layer 3 of 6 only two landings remain: actions 1, 2 and 3 all reach the last layer."""
    env = JumpEnv(source=source, split="test")
    infos = [play(env, [0, 0, 0, a], row=2)[1] for a in (1, 2, 3)]
    assert all(info["layers"] == 5 for info in infos)
    assert [int(i["actions"][3]) for i in infos] == [1, 1, 1]
    env.reset(seed=0, options={"row": 2})
    masks = [env.step(0)[4]["action_mask"].tolist() for _ in range(3)]  # at layers 1, 2 and 3
    assert masks == [[True] * 4, [True, True, True, False], [True, True, False, False]]


def test_the_observation_is_what_the_state_policy_reads(variant):
    """obs = [mean over tokens of layer 0's output, (the head's confidence), layer / (L - 1), compute spent]."""
    env = JumpEnv(source=variant, split="test")
    obs, _ = env.reset(seed=0, options={"row": 4})
    model = variant.model
    with torch.no_grad():
        hidden = model.stack.layers[0](model.embed(variant.splits["test"].inputs[4:5]))
        expected = [hidden.mean(dim=1)]
        if variant.config.model.policy_confidence:
            expected.append(model.probe(hidden))
    expected = torch.cat(expected, dim=1)[0].numpy()
    np.testing.assert_allclose(obs[: len(expected)], expected, rtol=1e-5, atol=1e-6)
    assert obs[-2] == 0.0 and 0.0 < obs[-1] < 0.2  # at layer 0, one layer (and no decision) spent


def test_shaping_moves_reward_earlier_but_keeps_the_return(source):
    plain, _, _ = play(JumpEnv(source=source, split="test"), [2, 1, 0, 0, 0], row=7)
    env = JumpEnv(source=source, split="test", shaped=True)
    env.reset(seed=0, options={"row": 7})
    _, first, *_ = env.step(2)
    assert first > 0  # two layers skipped: compute saved is paid at once
    shaped, _, _ = play(env, [2, 1, 0, 0, 0], row=7)
    assert shaped == pytest.approx(plain, abs=1e-5)


def test_a_seeded_reset_reproduces_the_episode(source):
    env = JumpEnv(source=source)
    runs = []
    for _ in range(2):
        obs, info = env.reset(seed=123)
        trajectory = [obs]
        done = False
        while not done:
            obs, reward, done, _, _ = env.step(1)
            trajectory.append(obs)
        runs.append((info["row"], reward, np.stack(trajectory)))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    np.testing.assert_array_equal(runs[0][2], runs[1][2])
    assert len({env.reset(seed=s)[1]["row"] for s in range(8)}) > 1  # the seed picks the input


def test_the_vector_env_matches_single_episodes_and_autoresets(source):
    n = 6
    vec = JumpVectorEnv(n, source=source, split="test")
    assert vec.metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.SAME_STEP
    rows = np.arange(n) * 3
    obs, _ = vec.reset(seed=0, options={"rows": rows})
    assert obs.shape == (n, vec.single_observation_space.shape[0]) and vec.observation_space.contains(obs)
    plans = [[a % 4, (a + 1) % 4, 0, 0, 0] for a in range(n)]
    returns, finished, step = np.zeros(n), {}, 0
    while len(finished) < n:
        actions = np.array([plans[i][min(step, 4)] for i in range(n)])
        obs, rewards, terminated, truncated, infos = vec.step(actions)
        assert vec.observation_space.contains(obs) and not truncated.any()
        returns += rewards
        for i in np.flatnonzero(terminated):
            if i not in finished:
                finished[i] = returns[i]
                assert infos["_final_info"][i] and infos["final_obs"][i].shape == obs[i].shape
        step += 1
    single = JumpEnv(source=source, split="test")
    for i in range(n):
        assert finished[i] == pytest.approx(play(single, plans[i], int(rows[i]))[0], abs=1e-4)


def test_registered_ids_make_envs_with_and_without_a_run(tiny_run):
    env = gymnasium.make("skipjump/Digits-v0")  # no arguments: an untrained network from the shipped config
    assert env.observation_space.shape == (64 + 2,)
    env = gymnasium.make("skipjump/Digits-v0", run_dir=str(tiny_run), split="test")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (16 + 2,)  # the run's tiny model
    lam = float(torch.load(tiny_run / "checkpoints" / "last.pt", weights_only=True)["updates"]["agent"]["lam"])
    assert env.unwrapped.episodes.lam == pytest.approx(lam)
    vec = gymnasium.make_vec("skipjump/Digits-v0", num_envs=4, vectorization_mode="vector_entry_point")
    assert vec.reset(seed=0)[0].shape == (4, 66)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"run_dir": "/nonexistent/run"}, "no such run directory"),
        ({"split": "validation"}, "split must be one of"),
    ],
)
def test_bad_arguments_are_one_line(kwargs, message):
    with pytest.raises(Exception, match=message) as error:
        gymnasium.make("skipjump/Digits-v0", **kwargs)
    assert "\n" not in str(error.value)


def test_a_run_of_another_task_is_refused(tiny_run):
    with pytest.raises(ValueError, match="trained task 'digits'.*skipjump/Digits-v0"):
        gymnasium.make("skipjump/KHop-v0", run_dir=str(tiny_run))


def test_a_broken_run_directory_is_one_line(tiny_run, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.yaml").write_text((tiny_run / "config.yaml").read_text())
    with pytest.raises(Exception, match="checkpoint") as error:
        gymnasium.make("skipjump/Digits-v0", run_dir=str(broken))
    assert "\n" not in str(error.value)


def test_a_stack_without_decisions_is_refused():
    source = load_source(config=tiny_config("model.num_layers=2", "model.max_jump=1"))
    with pytest.raises(ValueError, match="at least 3 layers"):
        JumpEnv(source=source)


@pytest.mark.parametrize("action", [4, -1, 1.5, "1"])
def test_an_action_outside_the_space_is_one_line(source, action):
    env = JumpEnv(source=source)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must be an integer in \[0, 3\]"):
        env.step(action)
    vec = JumpVectorEnv(2, source=source)
    vec.reset(seed=0)
    for bad in (np.array([0, 4]), np.array([0.0, 1.5]), np.array([1])):
        with pytest.raises(ValueError, match="actions must be 2 integers"):
            vec.step(bad)
    with pytest.raises(ValueError, match="rows must be 2 integers"):
        vec.reset(options={"rows": np.array([0.5, 1.0])})


def test_env_agent_trains_through_the_env_and_reports_the_table(tiny_run, tmp_path, capsys):
    import env_agent

    out = tmp_path / "agent.json"
    assert env_agent.main([str(tiny_run), "--updates", "3", "--envs", "8", "--seeds", "0", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for row in ("in-model policy (greedy)", "random_matched", "REINFORCE through the env, seed 0"):
        assert row in printed
    result = json.loads(out.read_text())
    assert result["lam"] == pytest.approx(JumpEnv(str(tiny_run)).episodes.lam)
    seeds = [result["rows"][f"REINFORCE through the env, seed {s}"]["reward"] for s in (0, 1)]
    assert result["rows"]["REINFORCE through the env, mean"]["reward"] == pytest.approx(np.mean(seeds))
    assert len(result["below_in_model"]) == 2
    assert 0.0 < result["rows"]["REINFORCE through the env, seed 0"]["compute_fraction"] < 1.1  # decisions cost too
    assert env_agent.main(["/nonexistent/run"]) == 2


def test_bench_env_prints_both_rates(tmp_path, capsys):
    import bench_env

    out = tmp_path / "bench.json"
    assert bench_env.main(["--envs", "4", "--rounds", "1", "--steps", "8", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["single_steps_per_second"] > 0 and result["vector_steps_per_second"] > 0
    assert "JumpVectorEnv(  4)" in capsys.readouterr().out
