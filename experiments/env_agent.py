"""Train a jump policy through the Gymnasium environment and compare it with the run's own policy.

    python experiments/env_agent.py RUN_DIR [--updates 400] [--envs 256] [--samples 4] [--ppo-steps 0] [--out FILE]

1. The package's REINFORCE (:class:`~skipjump.agent.ReinforceAgent` with the trainer's
   leave-one-out baseline over ``--samples`` paths per input, normalised advantages, entropy
   bonus) trains a small MLP on the run's held-out policy rows, through
   :class:`~skipjump.env.JumpVectorEnv`, with the reward weight lam the run ended with. Each
   update plays one episode in each of ``--envs`` environments. ``--match-compute`` instead adapts
   lam during training as the trainer does, holding compute at the run's ``target_compute``
   (then the in-model policy and the env's run at about the same compute); rewards are always
   scored with the run's final lam.
2. ``--ppo-steps N`` (needs the optional extra: ``pip install -e .[agents]``) also trains
   Stable-Baselines3's PPO for N environment steps on the same environment.
3. Every policy is run greedily on the whole test split, next to the run's in-model policy and
   random skipping at the in-model policy's compute: mean reward (the trainer's, charging each
   decision the built-in policy's FLOPs) with its standard error over test inputs, accuracy,
   compute fraction. ``--seeds 0 1 2`` trains REINFORCE once per seed and adds their mean (with
   the standard deviation over seeds). Target: no seed's reward more than 0.1 x (in-model -
   random_matched) below the in-model policy's.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from bench_speed import write_json
from torch import nn
from torch.distributions import Categorical
from tqdm import tqdm

from skipjump.agent import ReinforceAgent
from skipjump.config import AgentConfig
from skipjump.env import JumpEnv, JumpVectorEnv, Source, load_source
from skipjump.evaluate import match_random_p, sequence_length
from skipjump.provenance import provenance
from skipjump.reward import jump_reward, reward_loss
from skipjump.runs import LOAD_ERRORS
from skipjump.stack import JumpTrace, Routing

Act = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (observations (N, O), action masks (N, A)) -> actions (N,)


class MaskedPolicy(nn.Module):
    """observations (N, O) -> logits (N, A), actions that land on the same layer as a shorter one masked."""

    def __init__(self, obs_dims: int, actions: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dims, hidden), nn.SiLU(), nn.Linear(hidden, actions))

    def forward(self, obs: np.ndarray, mask: np.ndarray) -> torch.Tensor:
        logits = self.net(torch.as_tensor(obs))
        return logits.masked_fill(~torch.as_tensor(mask), float("-inf"))


def play_once(envs: JumpVectorEnv, act: Callable, seed: int | None = None, rows: np.ndarray | None = None):
    """One episode in every environment; ``act(obs, mask)`` -> (actions, extra per step or None).

    Returns the final info of each environment's first episode, its reward, and the per-step extras
    with the steps each environment was still in its first episode.
    """
    obs, info = envs.reset(seed=seed, options=None if rows is None else {"rows": rows})
    mask, n = info["action_mask"], envs.num_envs
    live = np.ones(n, dtype=bool)
    rewards = np.zeros(n, dtype=np.float32)
    final: dict[str, np.ndarray] = {}
    extras, alive = [], []
    while live.any():
        actions, extra = act(obs, mask)
        obs, reward, terminated, _, info = envs.step(actions)
        extras.append(extra)
        alive.append(torch.as_tensor(live.copy()))
        rewards += np.where(live, reward, 0.0)
        ended = terminated & live
        for key, value in info.get("final_info", {}).items():
            if not key.startswith("_"):
                final.setdefault(key, np.zeros_like(value))[ended] = value[ended]
        live &= ~terminated
        mask = info["action_mask"]
    return final, rewards, extras, alive


def train_reinforce(source: Source, args: argparse.Namespace, seed: int) -> MaskedPolicy:
    """REINFORCE with the trainer's leave-one-out baseline: each update draws envs / K rows and
    plays each in K environments, so every path is compared with other paths of the same input."""
    k = args.samples
    envs = JumpVectorEnv(args.envs // k * k, source=source, split="policy")
    policy = MaskedPolicy(envs.single_observation_space.shape[0], envs.single_action_space.n)
    target = source.config.agent.target_compute if args.match_compute else None
    lam_lr = source.config.agent.lam_lr
    config = AgentConfig(  # credit per path: the environment's trace has no per-decision log-probs
        baseline="leave_one_out",
        samples=k,
        credit="path",
        target_compute=target,
        lam=source.lam,
        lam_lr=lam_lr,
        lr=args.lr,
    )
    agent = ReinforceAgent(config, source.config.model.dims)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr)
    rng = np.random.default_rng(seed)

    def sample(obs, mask):
        dist = Categorical(logits=policy(obs, mask))
        actions = dist.sample()
        return actions.numpy(), (dist.log_prob(actions), dist.entropy())

    bar = tqdm(range(args.updates), desc="REINFORCE through the env", disable=None)
    for update in bar:
        rows = np.tile(rng.integers(len(source.splits["policy"]), size=envs.num_envs // k), k)  # K blocks
        final, rewards, extras, alive = play_once(envs, sample, seed=seed if update == 0 else None, rows=rows)
        log_probs = sum(torch.where(a, lp, 0.0) for (lp, _), a in zip(extras, alive))
        steps = torch.stack(alive).sum(dim=0).clamp(min=1)
        entropy = sum(torch.where(a, ent, 0.0) for (_, ent), a in zip(extras, alive)) / steps
        trace = JumpTrace(
            actions=torch.as_tensor(final["actions"]),
            executed=torch.as_tensor(final["executed"]),
            log_probs=log_probs,
            entropy=entropy,
            layers_executed=torch.as_tensor(final["layers"]),
            compute_fraction=torch.as_tensor(final["compute_fraction"]),
            features=torch.zeros(envs.num_envs, source.config.model.dims),  # read by a value baseline only
        )
        loss, stats = agent.loss(trace, torch.as_tensor(rewards))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(policy.parameters(), config.grad_clip)
        optimizer.step()
        agent.adapt_lam(trace.compute_fraction)  # --match-compute: the trainer's dual ascent; else a no-op
        envs.episodes.lam = float(agent.lam)
        bar.set_postfix(reward=f"{stats['policy/reward']:+.3f}", compute=f"{float(trace.compute_fraction.mean()):.2f}")
    return policy


def evaluate_env(source: Source, act: Act) -> dict[str, float]:
    """``act`` on every test row once, through the vector environment."""
    test = source.splits["test"]
    envs = JumpVectorEnv(len(test), source=source, split="test")
    final, rewards, _, _ = play_once(envs, lambda obs, mask: (act(obs, mask), None), rows=np.arange(len(test)))
    return summarise(rewards, final["correct"], final["compute_fraction"])


@torch.no_grad()
def evaluate_in_model(source: Source, routing: Routing) -> dict[str, float]:
    """The run's own model on the test split under ``routing``, rewarded as the trainer does."""
    test, a = source.splits["test"], source.config.agent
    outputs, trace = source.model(test.inputs, routing)
    loss = source.task.per_sample_loss(outputs, test.targets)
    loss = reward_loss(source.task, source.model, a.teacher, test.inputs, outputs, loss)
    correct = source.task.correct(outputs, test.targets)
    reward = jump_reward(trace, loss, correct, kind=a.reward, lam=source.lam, gamma=a.gamma, loss_cap=a.loss_cap)
    return summarise(reward.numpy(), correct.numpy(), trace.compute_fraction.numpy())


def summarise(rewards: np.ndarray, correct: np.ndarray, compute: np.ndarray) -> dict[str, float]:
    return {
        "reward": float(np.mean(rewards)),
        "reward_sem": float(np.std(rewards) / np.sqrt(len(rewards))),
        "accuracy": float(np.mean(correct)),
        "compute_fraction": float(np.mean(compute)),
    }


def train_ppo(source: Source, args: argparse.Namespace, seed: int) -> Act:
    try:
        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env
    except ImportError:
        raise SystemExit("env_agent.py: --ppo-steps needs Stable-Baselines3: pip install -e .[agents]") from None
    envs = make_vec_env(lambda: JumpEnv(source=source, split="policy"), n_envs=8, seed=seed)
    ppo = PPO("MlpPolicy", envs, n_steps=256, batch_size=256, seed=seed, device="cpu", verbose=0)
    ppo.learn(total_timesteps=args.ppo_steps, progress_bar=False)
    return lambda obs, mask: ppo.predict(obs, deterministic=True)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--updates", type=int, default=400, help="REINFORCE updates")
    parser.add_argument("--envs", type=int, default=256, help="environments (episodes per update)")
    parser.add_argument("--samples", type=int, default=4, help="K: environments per input (leave-one-out)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument(
        "--match-compute",
        action="store_true",
        help="hold compute at the run's target_compute by the trainer's dual ascent on lam (default: the final lam)",
    )
    parser.add_argument("--ppo-steps", type=int, default=0, help="> 0: also train SB3's PPO for this many env steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="REINFORCE runs (PPO: the first seed)")
    parser.add_argument("--out", metavar="FILE", help="also write the table as JSON, with how it was made")
    args = parser.parse_args(argv)
    if args.updates < 1 or args.samples < 2 or args.envs < args.samples:
        parser.error("--updates must be >= 1, --samples >= 2 and --envs >= --samples")
    try:
        source = load_source(args.run_dir)
        if args.match_compute and source.config.agent.target_compute is None:
            raise ValueError(f"{args.run_dir} has no agent.target_compute to match")
    except (*LOAD_ERRORS, ValueError) as error:
        print(f"env_agent.py: {error}", file=sys.stderr)
        return 2
    name = "REINFORCE through the env" + (", compute matched" if args.match_compute else "")

    rows: dict[str, dict[str, float]] = {}
    rows["in-model policy (greedy)"] = greedy = evaluate_in_model(source, Routing("greedy"))
    tokens = sequence_length(source.model, source.splits["test"])
    p = match_random_p(source.model.stack, tokens, greedy["compute_fraction"])
    torch.manual_seed(args.seeds[0])  # random_matched draws its jumps from torch's generator
    rows["random_matched"] = evaluate_in_model(source, Routing("random", p=p))
    seconds: dict[str, float] = {}
    for seed in args.seeds:
        torch.manual_seed(seed)
        started = time.perf_counter()
        policy = train_reinforce(source, args, seed)
        seconds[f"reinforce_seed{seed}"] = time.perf_counter() - started
        with torch.no_grad():
            rows[f"{name}, seed {seed}"] = evaluate_env(
                source, lambda obs, mask, policy=policy: policy(obs, mask).argmax(dim=-1).numpy()
            )
    ours = [rows[f"{name}, seed {seed}"] for seed in args.seeds]
    if len(ours) > 1:
        rows[f"{name}, mean"] = {
            key: float(np.mean([r[key] for r in ours])) for key in ("reward", "accuracy", "compute_fraction")
        } | {"reward_sem": float(np.std([r["reward"] for r in ours], ddof=1))}
    if args.ppo_steps > 0:
        started = time.perf_counter()
        act = train_ppo(source, args, args.seeds[0])
        seconds["ppo"] = time.perf_counter() - started
        rows[f"SB3 PPO through the env, seed {args.seeds[0]}"] = evaluate_env(source, act)

    gap = greedy["reward"] - rows["random_matched"]["reward"]
    below = [greedy["reward"] - r["reward"] for r in ours]  # > 0: the env's policy earns less
    print(f"{args.run_dir}: lam {source.lam:.4f}, {len(source.splits['policy'])} policy rows; test split")
    print(f"{'policy':<52} {'reward':>16} {'accuracy':>9} {'compute':>8}")
    for label, r in rows.items():
        spread = "sd" if label.endswith("mean") else "±"  # a mean row carries the spread over seeds
        reward = f"{r['reward']:+.4f} {spread} {r['reward_sem']:.4f}"
        print(f"{label:<52} {reward:>16} {r['accuracy']:>8.2%} {r['compute_fraction']:>8.3f}")
    met = max(below) <= 0.1 * gap
    print(
        f"target: env policy's reward at most 0.1 x (in-model - random_matched) = {0.1 * gap:.4f} below the "
        f"in-model policy's: {'met' if met else 'missed'} (below by {', '.join(f'{b:+.4f}' for b in below)})"
    )
    if args.out:
        result = {"run_dir": str(args.run_dir), "lam": source.lam, "args": vars(args), "train_seconds": seconds}
        write_json(args.out, {**provenance(), **result, "rows": rows, "below_in_model": below, "target_met": met})
    return 0


if __name__ == "__main__":
    sys.exit(main())
