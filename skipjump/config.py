"""Typed experiment config: YAML file + dotted ``key=value`` overrides, checked before any work.

Every problem raises :class:`ConfigError` with one line naming the key, the value and what is
allowed; ``experiments/train.py`` turns it into exit code 2.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A bad config value; the message is one line."""


TaskName = Literal["digits", "khop"]
PolicyInputs = Literal["input", "state"]
RewardKind = Literal["compute_minus_loss", "compute_minus_error", "blockdrop"]
Baseline = Literal["none", "moving_average", "self_critical", "leave_one_out", "value"]
Credit = Literal["path", "decision"]
Teacher = Literal["labels", "full_depth", "full_depth_answer"]
PolicyRows = Literal["held_out", "all"]
Estimator = Literal["sampled", "exact"]
Schedule = Literal["alternate", "joint", "sequential"]
SupervisedPath = Literal["policy", "full", "random", "full_and_policy"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["float32", "bf16"]


@dataclass
class TaskConfig:
    name: TaskName = "digits"
    patch: int = 2  # digits: side of the square patches that become tokens (1, 2, 4 or 8)
    test_fraction: float = 0.2
    data_file: str | None = None  # digits: an .npz with `images` (N, 8, 8) and `labels` (N,)
    positions: int = 8  # khop: pointer positions P (the answer is one of P)
    max_hops: int = 6  # khop: k is drawn per sample from 1..max_hops
    train_rows: int = 4096  # khop: fixed rows the references are chosen on (training draws fresh ones)
    test_rows: int = 2048  # khop: fixed test rows


@dataclass
class StackConfig:
    """The jump stack's architecture (``model:`` in a config file)."""

    dims: int = 64  # width D of every token's hidden state
    num_layers: int = 8  # layers L in the stack; layer 0 and layer L - 1 always run
    heads: int = 4  # attention heads (must divide dims)
    attention: bool = True  # a self-attention sublayer in every layer (the seed had none)
    causal: bool = False  # causal attention mask (for sequence models)
    mini_hc: bool = True  # the seed's mini hyper-connections on each layer's update
    hc_expansion: int = 2  # parallel pathways per mini hyper-connection
    memory_slots: int = 64  # learned keys of each layer's memory (token) gate
    gate_threshold: float = 0.5  # the token gate's starting threshold, in [0, 1]
    max_jump: int = 3  # a jump skips 0..max_jump layers, in [1, num_layers - 1]
    jump_mix: bool = True  # after a jump, mix in the stack input and the working memory (the seed's)
    policy_inputs: PolicyInputs = "state"  # state: the pooled hidden state at each decision; input: the seed's
    policy_hidden: int = 128  # hidden units of the policy MLP
    # state policy: also read the task head's confidence on the current state (a task's model passes its head as
    # a probe; a stack alone has none)
    policy_confidence: bool = False
    policy_state: bool = True  # state policy: read the pooled state (false: only the layer, and the confidence)
    policy_dropout: float = 0.0  # dropout on the pooled state the policy reads, in training (against memorising rows)


@dataclass
class AgentConfig:
    # compute_minus_loss: lam * saved - loss; compute_minus_error: 0/1 error for the loss;
    # blockdrop: 1 - compute^2 if right, else -gamma
    reward: RewardKind = "compute_minus_loss"
    loss_cap: float | None = None  # compute_minus_loss: the loss term clipped at this (a bounded penalty)
    # what the reward's loss compares a path's output with: labels (the task loss), or the same input's
    # full-depth output, no label read: full_depth, KL(full depth || path), how far a shortcut moves the
    # answer's distribution; full_depth_answer, 1 where the path's answer differs from full depth's, else 0
    teacher: Teacher = "full_depth"
    lam: float = 0.1  # weight of compute saved in the reward (the starting value if target_compute is set)
    target_compute: float | None = 0.58  # set: lam adapts so the mean compute fraction approaches it
    lam_lr: float = 0.05  # target_compute: lam += lam_lr * (mean compute fraction - target) per policy step
    # set: after training, greedy decoding is given a price per skipped layer (skipjump/budget.py) so that its
    # mean compute fraction on the held-out rows is at most this, as close as bisection finds (target_compute
    # holds only the sampled paths' mean, and greedy's drifts from it by a point or three)
    greedy_budget: float | None = None
    # greedy_budget: true prices greedy up to the budget too, so every run spends it; false only where greedy would
    # spend more (a cap): compute the policy chose not to spend is not spread over inputs whatever their difficulty
    greedy_fill: bool = True
    gamma: float = 5.0  # blockdrop: penalty for a wrong prediction
    # sampled: REINFORCE over sampled paths (the baseline, samples and credit below); exact: every
    # path of exact_inputs inputs per policy step is run (copies share states) and weighted by its
    # probability, the expected gradient with no sampling noise (baseline, samples, credit unused)
    estimator: Estimator = "sampled"
    exact_inputs: int = 16  # exact: inputs of each policy batch whose paths all run (56 paths on the demo)
    baseline: Baseline = "leave_one_out"  # the advantage compares paths of the same input
    momentum: float = 0.9  # moving_average
    samples: int = 8  # leave_one_out: sampled paths per input (copies in the same state share their compute)
    # leave_one_out: path scores every decision of a path by one advantage; decision compares each
    # decision with the other paths of the same input that reached the same layer the same way
    # (other baselines give every decision its path's advantage: the two are the same there)
    credit: Credit = "decision"
    normalize_advantage: bool = True
    entropy_coef: float = 0.01  # weight of the policy's entropy in the loss (where target_entropy is set: the start)
    # set: entropy_coef adapts to hold the policy's entropy (nats; per sample, the mean over its decisions, then
    # averaged) near this; above what the policy can reach (fewer choices near the last layer) it grows unbounded
    target_entropy: float | None = None
    entropy_lr: float = 0.01  # target_entropy: entropy_coef += entropy_lr * (target - mean entropy) per policy step
    # policy steps sample from (1 - e) * pi + e * uniform, e = explore until the warm-up ends, then decayed
    # linearly to 0 at trainer.steps
    explore: float = 0.0
    lr: float = 3e-3
    weight_decay: float = 0.0  # decoupled (AdamW) weight decay of the policy's parameters, against memorising rows
    grad_clip: float = 1.0


@dataclass
class TrainerConfig:
    steps: int = 3000  # optimisation steps in all, supervised and policy
    batch_size: int = 64  # rows per step on each rank (under torchrun the global batch is N times this)
    lr: float = 2e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # alternate: supervised and policy steps in cycles after the warm-up; joint: both updates from one forward pass,
    # after the warm-up; sequential: the warm-up trains the network, then only the policy trains (on a fixed network)
    schedule: Schedule = "alternate"
    warmup_steps: int = 500  # supervised steps before the first policy step
    supervised_steps: int = 1  # per cycle
    policy_steps: int = 1  # per cycle
    # full: the network keeps needing its depth, the policy learns where to skip; policy: the policy's sampled
    # paths; random: random paths (random_p); full_and_policy: after the warm-up, full depth and the policy's
    # paths in turn, so the network also learns the paths it is run on (and the jump mix, which full depth never runs)
    supervised_path: SupervisedPath = "full"
    random_p: float = 0.3  # supervised_path=random: jump probability per decision
    # supervised steps before step N run full depth, whatever supervised_path says: with random paths after, the
    # full network learns the task first, then its short paths learn what they can (on k-hop: the small k)
    full_depth_steps: int = 0
    # supervised steps on random or the policy's paths also run full depth: full depth learns the labels and the
    # path learns full depth's outputs (their KL), the in-place distillation of slimmable networks
    distill: bool = False
    # fraction of the training split the network never trains on: the references are chosen there (on rows the
    # network memorised every path is right), and with policy_rows=held_out policy steps read only it
    policy_holdout: float = 0.25
    # held_out: policy steps read only the held-out rows; all: every training row, which needs a reward that reads
    # no label (agent.teacher=full_depth): the labels of rows the network memorised give every path a ~0 loss
    policy_rows: PolicyRows = "all"
    # > 0: each policy row is replaced, with this probability, by a copy shifted one pixel in one of 8 directions
    # (digits only): the policy sees up to 9 versions of each row it reads (the row itself unless P = 1), not one
    policy_augment: float = 0.0
    imitation_steps: int = 0  # > 0: the policy first imitates the oracle's paths on held-out rows (see trainer.py)
    imitation_rows: int = 2048  # rows whose oracle paths are imitated (every path is scored on each)
    curriculum_steps: int = 0  # > 0: policy steps per decision unlocked, last layer first
    threshold_update: bool = False  # the seed's update_threshold after each supervised step
    threshold_lr: float = 0.01
    log_every: int = 50
    eval_every: int = 500  # > 0: evaluate greedy and full depth on the test split every N steps
    checkpoint_every: int = 500
    eval_batch_size: int = 512
    device: Device = "auto"  # auto: the GPU when CUDA is present (one per rank under torchrun), else the CPU
    # compile each layer for the full-depth supervised steps (torch.compile: a one-off ~7 s, then faster steps;
    # on the CPU it needs a C++ compiler); the routed passes, whose row counts vary per layer, stay eager
    compile: bool = False
    precision: Precision = "float32"  # bf16: training forward passes under bfloat16 autocast (evaluation stays float32)


@dataclass
class Config:
    seed: int = 0
    task: TaskConfig = field(default_factory=TaskConfig)
    model: StackConfig = field(default_factory=StackConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


POSITIVE = (
    "trainer.steps trainer.batch_size trainer.lr trainer.log_every trainer.eval_batch_size agent.lr "
    "trainer.supervised_steps trainer.policy_steps trainer.checkpoint_every agent.samples "
    "task.max_hops task.train_rows task.test_rows agent.loss_cap trainer.imitation_rows agent.exact_inputs"
).split()
NON_NEGATIVE = (
    "agent.lam agent.lam_lr agent.gamma agent.entropy_coef agent.entropy_lr agent.grad_clip agent.weight_decay "
    "trainer.grad_clip trainer.weight_decay trainer.warmup_steps trainer.full_depth_steps trainer.imitation_steps "
    "trainer.curriculum_steps trainer.threshold_lr trainer.eval_every seed"
).split()
UNIT_INTERVAL = ("agent.momentum", "trainer.random_p", "trainer.policy_augment")


def check_stack(c: StackConfig, prefix: str = "") -> None:
    """The architecture's range checks, the one place they are made; raises ConfigError."""
    for name in ("dims", "heads", "memory_slots", "hc_expansion", "policy_hidden"):
        if not getattr(c, name) > 0:
            raise ConfigError(f"{prefix}{name}: got {getattr(c, name)!r}, must be > 0")
    if c.num_layers < 2:
        raise ConfigError(f"{prefix}num_layers: got {c.num_layers}, must be >= 2")
    if not 1 <= c.max_jump < c.num_layers:
        raise ConfigError(
            f"{prefix}max_jump: got {c.max_jump}, must be in [1, {prefix}num_layers - 1 = {c.num_layers - 1}]"
        )
    if c.dims % c.heads:
        raise ConfigError(f"{prefix}heads: got {c.heads}, must divide {prefix}dims = {c.dims}")
    if not 0 <= c.gate_threshold <= 1:
        raise ConfigError(f"{prefix}gate_threshold: got {c.gate_threshold!r}, must be in [0, 1]")
    _check_choice(f"{prefix}policy_inputs", c.policy_inputs, PolicyInputs)
    if not 0 <= c.policy_dropout < 1:
        raise ConfigError(f"{prefix}policy_dropout: got {c.policy_dropout!r}, must be in [0, 1)")
    if c.policy_dropout > 0 and not c.policy_state:
        raise ConfigError(
            f"{prefix}policy_dropout: the policy reads no state (policy_state: false) to drop; set it to 0"
        )
    if not c.policy_state and c.policy_inputs != "state":
        raise ConfigError(f"{prefix}policy_state: false needs {prefix}policy_inputs=state (one decision per layer)")
    if c.policy_confidence and c.policy_inputs != "state":
        raise ConfigError(f"{prefix}policy_confidence: needs {prefix}policy_inputs=state (one decision per layer)")


def _check_choice(key: str, value: Any, literal: Any) -> Any:
    allowed = typing.get_args(literal)
    if value not in allowed:
        raise ConfigError(f"{key}: got {short(value)}, allowed: {', '.join(allowed)}")
    return value


def cut(value: Any, limit: int = 100, quote: bool = False) -> str:
    """``value`` on one line of at most ``limit`` characters: a string as it is (unless ``quote``),
    anything else as a bounded repr (a few levels and items: a crafted nest of shared lists in a
    YAML or checkpoint file cannot make it huge)."""
    text = value if isinstance(value, str) and not quote else _BOUNDED.repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def short(value: Any) -> str:
    """How errors quote a bad value: its repr, cut to 60 characters (never a whole file)."""
    return cut(value, 60, quote=True)


_BOUNDED = reprlib.Repr()
_BOUNDED.maxlevel, _BOUNDED.maxstring, _BOUNDED.maxother = 3, 200, 200
_BOUNDED.maxlist = _BOUNDED.maxtuple = _BOUNDED.maxdict = _BOUNDED.maxset = 6
MAX_CONFIG_BYTES = 1 << 20


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    if typing.get_origin(annotation) is Literal:
        return _check_choice(key, value, annotation)
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key}: got {value!r}, must be a finite number")
            return float(value)
        if option is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                return _check_type(key, number, annotation)
        if option is str and isinstance(value, str):
            return value
    allowed = " or ".join("null" if o is type(None) else o.__name__ for o in options)
    raise ConfigError(f"{key}: expected {allowed}, got {short(value)}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping of keys, got {short(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; allowed: {', '.join(names)}"
            raise ConfigError(f"unknown key {short(full)}{hint}")
        if dataclasses.is_dataclass(hints[key]):
            values[key] = _build(hints[key], value, f"{full}.")
        else:
            values[key] = _check_type(full, value, hints[key])
    return cls(**values)


def _get(config: Config, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def validate(config: Config) -> Config:
    """Range and choice checks that types alone cannot express."""
    for key in POSITIVE:
        if _get(config, key) is not None and not _get(config, key) > 0:  # None: an optional value unset
            raise ConfigError(f"{key}: got {_get(config, key)!r}, must be > 0")
    for key in NON_NEGATIVE:
        if not _get(config, key) >= 0:
            raise ConfigError(f"{key}: got {_get(config, key)!r}, must be >= 0")
    for key in UNIT_INTERVAL:
        if not 0 <= _get(config, key) <= 1:
            raise ConfigError(f"{key}: got {_get(config, key)!r}, must be in [0, 1]")
    check_stack(config.model, "model.")
    if not 0 <= config.trainer.policy_holdout < 1:
        raise ConfigError(f"trainer.policy_holdout: got {config.trainer.policy_holdout}, must be in [0, 1)")
    if config.trainer.policy_augment > 0 and config.trainer.schedule == "joint":
        raise ConfigError("trainer.policy_augment: the joint schedule has no policy-only rows to shift; set it to 0")
    if config.trainer.policy_holdout > 0 and config.trainer.schedule == "joint":
        raise ConfigError(
            "trainer.policy_holdout: the joint schedule trains both on one batch; set trainer.policy_holdout=0"
        )
    if config.task.positions < 2:
        raise ConfigError(f"task.positions: got {config.task.positions}, must be >= 2")
    if not 0 < config.task.test_fraction < 1:
        raise ConfigError(f"task.test_fraction: got {config.task.test_fraction}, must be in (0, 1)")
    if config.agent.target_compute is not None and not 0 < config.agent.target_compute <= 1:
        raise ConfigError(f"agent.target_compute: got {config.agent.target_compute}, must be in (0, 1] or null")
    if config.agent.greedy_budget is not None and not 0 < config.agent.greedy_budget <= 1:
        raise ConfigError(f"agent.greedy_budget: got {config.agent.greedy_budget}, must be in (0, 1] or null")
    if config.agent.target_compute is not None and config.agent.reward == "blockdrop":
        raise ConfigError(
            f"agent.target_compute: the {config.agent.reward} reward has no lam to adapt; set agent.target_compute=null"
        )
    if config.agent.target_entropy is not None and not 0 < config.agent.target_entropy < math.log(
        config.model.max_jump + 1
    ):
        raise ConfigError(
            f"agent.target_entropy: got {config.agent.target_entropy}, must be in (0, ln(model.max_jump + 1)"
            f" = {math.log(config.model.max_jump + 1):.3f}) nats, or null"
        )
    if not 0 <= config.agent.explore < 1:
        raise ConfigError(f"agent.explore: got {config.agent.explore}, must be in [0, 1)")
    if config.agent.teacher != "labels" and config.agent.reward != "compute_minus_loss":
        raise ConfigError(
            f"agent.teacher: only the compute_minus_loss reward compares with a teacher, not {config.agent.reward};"
            " set agent.teacher=labels and trainer.policy_rows=held_out"
        )
    if config.agent.teacher == "labels" and config.trainer.policy_rows == "all" and config.trainer.policy_holdout > 0:
        raise ConfigError(
            "trainer.policy_rows: all reads the labels of rows the network trained on under agent.teacher=labels"
            " (every path's loss is ~0 there); set trainer.policy_rows=held_out"
        )
    if config.agent.loss_cap is not None and config.agent.reward != "compute_minus_loss":
        raise ConfigError(
            f"agent.loss_cap: only the compute_minus_loss reward has a loss to clip, not {config.agent.reward}"
        )
    if not config.agent.greedy_fill and config.agent.greedy_budget is None:
        raise ConfigError("agent.greedy_fill: false caps greedy's compute at agent.greedy_budget, which is null")
    if config.agent.loss_cap is not None and config.agent.teacher == "full_depth_answer":
        raise ConfigError(
            "agent.loss_cap: the full_depth_answer teacher's loss is 0 or 1 already; a cap would only scale it"
        )
    if config.trainer.imitation_steps and config.trainer.curriculum_steps:
        raise ConfigError(
            "trainer.imitation_steps: imitation teaches every decision, the curriculum unlocks them"
            " one by one; set one of them to 0"
        )
    if config.trainer.imitation_steps and config.agent.target_compute is None:
        raise ConfigError("trainer.imitation_steps: the oracle it imitates needs a budget; set agent.target_compute")
    if config.agent.estimator == "exact" and (config.agent.explore > 0 or config.trainer.schedule == "joint"):
        raise ConfigError(
            "agent.estimator: exact samples no path (no exploration) and trains only the policy; set"
            " agent.explore=0 and a trainer.schedule other than joint"
        )
    if config.agent.estimator == "exact" and config.model.policy_dropout > 0:
        raise ConfigError(
            "model.policy_dropout: the exact estimator weighs paths by probabilities that dropout would make"
            " differ per copy; set it to 0"
        )
    if config.model.policy_dropout > 0 and config.agent.baseline == "self_critical":
        raise ConfigError(
            "model.policy_dropout: the self_critical baseline's greedy pass would be perturbed by it; pick another"
            " agent.baseline or set it to 0"
        )
    if config.agent.baseline == "leave_one_out" and config.agent.samples < 2:
        raise ConfigError(f"agent.samples: got {config.agent.samples}, leave_one_out needs >= 2")
    if config.task.data_file is not None and not Path(config.task.data_file).is_file():
        raise ConfigError(f"task.data_file: no such file: {config.task.data_file}")
    t = config.trainer
    for key, lr, decay in (("agent", config.agent.lr, config.agent.weight_decay), ("trainer", t.lr, t.weight_decay)):
        if lr * decay >= 1:  # AdamW multiplies the weights by 1 - lr x decay each step
            raise ConfigError(
                f"{key}.weight_decay: got {decay}, and with {key}.lr = {lr} each step scales the weights by"
                f" 1 - lr x decay = {1 - lr * decay:.3g}; keep lr x decay < 1"
            )
    if t.full_depth_steps and t.supervised_path == "full":
        raise ConfigError("trainer.full_depth_steps: trainer.supervised_path is full already; set it to 0")
    if t.distill and t.supervised_path == "full":
        raise ConfigError(
            "trainer.distill: trainer.supervised_path is full, so no path learns from full depth; pick random"
        )
    if t.distill and t.schedule == "joint":
        raise ConfigError("trainer.distill: the joint schedule has no supervised steps to distill in; pick alternate")
    if t.schedule == "sequential" and t.supervised_path in ("policy", "full_and_policy"):
        raise ConfigError(
            f"trainer.supervised_path: {t.supervised_path} trains on the policy's paths, and the sequential schedule"
            " trains the network before the policy; pick full or random"
        )
    if t.schedule == "sequential" and t.supervised_path == "random" and t.full_depth_steps >= t.warmup_steps:
        raise ConfigError(
            f"trainer.full_depth_steps: got {t.full_depth_steps}, but under the sequential schedule the network trains"
            f" for trainer.warmup_steps = {t.warmup_steps} steps, so its random paths would never run; set it lower"
        )
    if config.trainer.warmup_steps >= config.trainer.steps:
        raise ConfigError(
            f"trainer.warmup_steps: got {config.trainer.warmup_steps}, must be < trainer.steps = {config.trainer.steps}"
        )
    return config


def parse_override(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. trainer.steps=300")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def from_dict(data: dict[str, Any], overrides: list[str] = ()) -> Config:
    data = copy.deepcopy(data)
    for text in overrides:
        key, value = parse_override(text)
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: '{part}' is not a section")
        node[leaf] = value
    return validate(_build(Config, data, ""))


def load(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read a YAML config, apply ``key=value`` overrides, check everything."""
    return from_dict(read_mapping(path), overrides)


def read_mapping(path: str | Path) -> dict:
    """A config file's YAML mapping, unchecked beyond being one (safe_load, size-capped)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if not path.is_file() or path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: not a config file (a regular file of at most {MAX_CONFIG_BYTES} bytes)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a config file (not text)") from None
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read config {path}: {cut(str(error).splitlines()[0], 120)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {short(data)}")
    return data


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)
