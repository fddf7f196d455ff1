"""PolicyConfig: everything that defines a policy's architecture, validated, as JSON.

Saved as `config.json` beside every checkpoint (`ttm_policy.checkpoint`); ttm-train offers
its fields as `--model.*` flags (tyro). The temporal cores' own settings are nested configs,
one field per core family, made from the core registry (`ttm_policy.cores.CORES`: a core's
`config_field` and settings class), so adding a core adds its field here without an edit.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Annotated, Any, Literal, get_type_hints

import tyro

from ttm_policy.cores import CORES, Core, config_fields, spec

__all__ = ["LIFT_OBS_KEYS", "Core", "Head", "PolicyConfig", "is_image_key"]

Head = Literal["continuous", "gmm", "discrete"]

# robomimic's Lift image observations (train.data re-exports them; the model layer imports
# nothing from train/).
LIFT_OBS_KEYS = (
    "agentview_image",
    "robot0_eye_in_hand_image",
    "robot0_eef_pos",
    "robot0_eef_quat",
    "robot0_gripper_qpos",
)


def is_image_key(key: str) -> bool:
    """robomimic's convention: `<camera>_image` is an RGB image, every other key is low-dim."""
    return key.endswith("_image")


def check_obs_keys(keys: tuple[str, ...], owner: str) -> None:
    """ValueError naming `owner` unless `keys` is a non-empty list of distinct keys, none empty
    or holding '.' (the checkpoint's tensor names use it)."""
    if not keys:
        raise ValueError(
            f"{owner} is empty: name at least one key, e.g. agentview_image robot0_eef_pos"
        )
    dups = sorted({k for k in keys if keys.count(k) > 1})
    if dups:
        raise ValueError(f"{owner} lists {dups} more than once: list each key once")
    bad = [k for k in keys if "." in k or not k]
    if bad:
        raise ValueError(f"{owner} {bad}: keys may not be empty or contain '.'")


def _settings_flags(group: str) -> type:
    """A core settings group as ttm-train's command line offers it: without the width and the
    token count, which PolicyConfig.__post_init__ sets from `dim` and the observation keys,
    nor what a core fixes (`CoreSpec.sync`, e.g. the memory-less switch): a flag for them
    would do nothing. Its own checks wait for PolicyConfig, which makes the plain settings
    class with the real D and N (so `--model.dim 96 --model.ttm.heads 12` is judged with
    D=96)."""
    cls = config_fields()[group]
    hints = get_type_hints(cls)
    fixed = {"dim", "input_tokens"}.union(
        *(s.sync for s in CORES.values() if s.config_field == group)
    )
    ns: dict[str, Any] = {"__annotations__": {}, "__doc__": cls.__doc__}
    ns["__post_init__"] = lambda self: None
    for f in fields(cls):
        if f.name in fixed:
            ns["__annotations__"][f.name] = tyro.conf.Suppress[hints[f.name]]
            ns[f.name] = (
                f.default if f.default is not MISSING else field(default_factory=f.default_factory)
            )
    return dataclass(type(cls.__name__, (cls,), ns))


def _add_core_groups(cls: type) -> type:
    """One settings field per core family of the registry (`ttm_policy.cores.CORES`), added to
    PolicyConfig before it becomes a dataclass: a new core is its module and one registry
    entry, and its `--model.<config_field>.*` flags and config.json entry follow."""
    for group, settings in config_fields().items():
        readers = ", ".join(n for n, s in CORES.items() if s.config_field == group)
        doc = (f"{settings.__name__}, the settings of --policy {readers} (dim and input_tokens "
               "follow this config).")  # fmt: skip
        cls.__annotations__[group] = Annotated[
            settings, tyro.conf.arg(constructor=_settings_flags(group), help=doc)
        ]
        setattr(cls, group, field(default_factory=settings))
    return cls


def cli_view(core: str) -> type:
    """PolicyConfig as ttm-train's command line offers it once `--policy core` is chosen: only
    that core's settings group (`--model.<field>.*`), so `--help` lists what applies and a
    flag of another core is an error; the other groups keep their values (and config.json
    still holds them). Turn a parsed view back into a PolicyConfig with `plain`."""
    keep, groups = spec(core).config_field, config_fields()
    ns: dict[str, Any] = {"__annotations__": {}}
    for f in fields(PolicyConfig):
        if f.name in groups and f.name != keep:
            ns["__annotations__"][f.name] = tyro.conf.Suppress[groups[f.name]]
            ns[f.name] = field(default_factory=f.default_factory)
    return dataclass(type("PolicyConfig", (PolicyConfig,), ns))


def plain(cfg: PolicyConfig) -> PolicyConfig:
    """A PolicyConfig (or a `cli_view` of one) as a plain PolicyConfig with the same fields."""
    return PolicyConfig(**{f.name: getattr(cfg, f.name) for f in fields(PolicyConfig) if f.init})


def _synced(cls: type, cfg: Any, **shared: Any) -> Any:
    """`cfg` (a `cls`, or its CLI view above) as a plain `cls` with the sizes PolicyConfig owns."""
    return cls(**{**{f.name: getattr(cfg, f.name) for f in fields(cls) if f.init}, **shared})


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"PolicyConfig.{name}={value!r}: choose one of {choices}")


@dataclass
@_add_core_groups
class PolicyConfig:
    """Everything that defines a policy's architecture; saved as config.json beside it. The
    temporal cores' settings follow the fields below, one per core family of the registry
    (`ttm`, `lstm`, `transformer`, `gru`: `ttm_policy.cores.config_fields()`)."""

    # obs_keys, image_size, crop_size and core: not flags of ttm-train (tyro.conf.Suppress), which sets
    # them from the dataset and its own --obs-keys and --policy.
    obs_keys: tyro.conf.Suppress[tuple[str, ...]] = LIFT_OBS_KEYS
    """Observation keys consumed: `<camera>_image` (uint8 HxWx3) and low-dim keys, in token order."""
    image_size: tyro.conf.Suppress[int] = 84
    """H = W of the camera images the env gives (robomimic's 84)."""
    crop_size: tyro.conf.Suppress[int] = 76
    """Side of the crop the tokenizer sees: random per sequence in training, central at
    inference (robomimic crops 84 -> 76). Set it to image_size for no crop. Not a flag of
    ttm-train, which sets it from the data and its own --crop (a fraction of the side)."""
    dim: int = 128
    """D: token width everywhere; 128 (not ViT-B's 768) keeps the model small enough to train
    on CPU (1.3 M parameters for the default Lift config)."""
    tokens_per_camera: int = 8
    """k: TokenLearner output tokens per camera (RT-1 reduces 81 grid tokens to 8)."""
    conv_channels: tuple[int, ...] = (32, 32, 64, 64)
    """Widths of the four 3x3 convs (strides 2, 2, 2, 1) of each camera's tokenizer."""
    lowdim_tokens: Literal["concat", "per_key"] = "concat"
    """Low-dim keys as one token from their concatenation (as robomimic concatenates them), or
    one token per key."""
    lowdim_dims: dict[str, int] = field(default_factory=dict)
    """Width of each low-dim key; filled from the normalisation stats when the policy is built."""
    core: tyro.conf.Suppress[Core] = "ttm"
    """Temporal core: ttm, ttm-memoryless, lstm, transformer (last K steps), none (single frame)."""
    head: Head = "continuous"
    """Action head: continuous regression, gmm (robomimic), discrete (RT-1 bins)."""
    loss: Literal["l1", "mse"] = "l1"
    """Regression loss of the continuous head (ACT uses L1, robomimic BC uses MSE)."""
    binary_gripper: bool | None = None
    """Continuous head: the last action dimension (the gripper) as a binary open/close
    output trained by cross-entropy, not a regressed value (docs/results.md, PickPlaceCan).
    None: ttm-train decides from the demonstrations (on when the last action column is an
    open/close command, `train.data.is_gripper_column`); a policy built directly takes None
    as off."""
    head_input: Literal["flatten", "mean"] = "flatten"
    """How the core's R output tokens become the head's input: concatenated, or averaged."""
    head_hidden: int = 256
    """Hidden width of the head's MLP."""
    gmm_modes: int = 5
    """Mixture components of the gmm head (robomimic's 5)."""
    gmm_min_std: float = 1e-4
    """Floor on the gmm head's scales (robomimic's 1e-4)."""
    bins: int = 256
    """Bins per action dimension of the discrete head (RT-1's 256)."""
    sample_actions: bool = False
    """Sample actions at inference instead of taking the most likely one: the gmm/discrete
    heads' actions, a binary gripper's open/close (the `cpu` and `gpu` presets: on)."""
    action_dim: tyro.conf.Suppress[int] = 7
    """A: OSC_POSE deltas (6) + gripper for robosuite; Meta-World's 4 (xyz delta + gripper).
    Not a flag of ttm-train, which sets it from the dataset's actions."""
    action_horizon: int = 1
    """K: actions predicted per step (1 = no chunks). K > 1 needs data with action_horizon=K."""
    chunk_execution: Literal["queue", "ensemble"] = "queue"
    """How chunks run at inference: `queue` re-plans every K steps, `ensemble` averages the
    last K chunks' predictions (ACT temporal ensembling)."""
    ensemble_decay: float = 0.01
    """m in ACT's ensembling weights exp(-m i), i = 0 for the oldest prediction (ACT: 0.01)."""
    bptt: int | None = None
    """Cut gradients through the recurrent state every `bptt` steps in training (None: never)."""
    aux_final_keys: tuple[str, ...] = ()
    """Low-dim obs keys whose value at the episode's last step is predicted from every step, as
    an auxiliary training loss (hindsight goal prediction; training only, not exported). On a
    memory task the outcome depends on the cue, so this asks the memory to hold it at every
    step, not only at the few steps where the actions differ. Empty: no auxiliary loss."""
    aux_weight: float = 1.0
    """Weight of the auxiliary loss (L1 on normalised values) against the action loss."""
    tasks: tyro.conf.Suppress[tuple[str, ...]] = ()
    """The task vocabulary of a multi-task policy, in index order (e.g. MW-reach, MW-push):
    each task has a learned FiLM of the input tokens (`ttm_policy.network.TaskFiLM`) and the
    policy is told which one it is doing by name or index. Empty: a single-task policy, which
    takes no task (and whose config.json has no `tasks` entry). Not a flag of ttm-train, which
    sets it from the datasets' env_args when they hold more than one task."""

    def __post_init__(self) -> None:
        self.obs_keys = tuple(self.obs_keys)
        self.aux_final_keys = tuple(self.aux_final_keys)
        self.tasks = tuple(self.tasks)
        self.conv_channels = tuple(self.conv_channels)
        self.lowdim_dims = {str(k): int(v) for k, v in dict(self.lowdim_dims).items()}
        check_obs_keys(self.obs_keys, "PolicyConfig.obs_keys")
        for name in ("image_size", "crop_size", "dim", "tokens_per_camera", "head_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"PolicyConfig.{name}={getattr(self, name)}: must be >= 1")
        if self.crop_size > self.image_size:
            raise ValueError(
                f"PolicyConfig.crop_size={self.crop_size} > image_size={self.image_size}: "
                "lower crop_size (or set it to image_size for no crop)"
            )
        if len(self.conv_channels) != 4 or min(self.conv_channels) < 1:
            raise ValueError(
                f"PolicyConfig.conv_channels={self.conv_channels}: give 4 positive widths"
            )
        _check_choice("core", self.core, tuple(CORES))
        _check_choice("head", self.head, Head.__args__)
        _check_choice("loss", self.loss, ("l1", "mse"))
        _check_choice("lowdim_tokens", self.lowdim_tokens, ("concat", "per_key"))
        _check_choice("head_input", self.head_input, ("flatten", "mean"))
        _check_choice("chunk_execution", self.chunk_execution, ("queue", "ensemble"))
        if self.binary_gripper and self.head != "continuous":
            raise ValueError(
                f"PolicyConfig.binary_gripper needs head='continuous' (got {self.head!r}); the "
                "gmm and discrete heads model the gripper's two values already"
            )
        if self.action_dim < 1 or self.action_horizon < 1:
            raise ValueError(
                f"PolicyConfig.action_dim={self.action_dim}, action_horizon={self.action_horizon}: "
                "both must be >= 1 (action_horizon=1 means no chunks)"
            )
        if self.gmm_modes < 1 or self.gmm_min_std <= 0:
            raise ValueError(
                f"PolicyConfig.gmm_modes={self.gmm_modes}, gmm_min_std={self.gmm_min_std}: "
                "need >= 1 mode and a positive min std"
            )
        if self.bins < 2:
            raise ValueError(f"PolicyConfig.bins={self.bins}: need at least 2 bins")
        if self.ensemble_decay < 0:
            raise ValueError(f"PolicyConfig.ensemble_decay={self.ensemble_decay}: must be >= 0")
        if self.bptt is not None and self.bptt < 1:
            raise ValueError(f"PolicyConfig.bptt={self.bptt}: use None (no cut) or >= 1")
        images = [k for k in self.aux_final_keys if is_image_key(k)]
        if images:
            raise ValueError(
                f"PolicyConfig.aux_final_keys {images} are images: name low-dim keys the policy "
                "reads (e.g. robot0_eef_pos)"
            )
        if self.aux_weight < 0:
            raise ValueError(f"PolicyConfig.aux_weight={self.aux_weight}: must be >= 0")
        bad = [t for t in self.tasks if not isinstance(t, str) or not t]
        if bad or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(
                f"PolicyConfig.tasks={list(self.tasks)}: name each task once, by a non-empty "
                "string (e.g. MW-reach MW-push)"
            )
        extra = sorted(set(self.lowdim_dims) - set(self.lowdim_keys))
        if extra:
            raise ValueError(
                f"PolicyConfig.lowdim_dims names {extra}, which are not low-dim obs_keys "
                f"{list(self.lowdim_keys)}"
            )
        # The cores' shared sizes follow this config (one source of truth), and the chosen
        # core fixes what it fixes (ttm_policy.cores: e.g. the memory-less TTM).
        N, chosen = self.num_tokens, spec(self.core)
        for name, cls in config_fields().items():
            fixed = chosen.sync if name == chosen.config_field else {}
            setattr(
                self, name, _synced(cls, getattr(self, name), dim=self.dim, input_tokens=N, **fixed)
            )

    # ------------------------------------------------------------------ derived

    @property
    def camera_keys(self) -> tuple[str, ...]:
        return tuple(k for k in self.obs_keys if is_image_key(k))

    @property
    def lowdim_keys(self) -> tuple[str, ...]:
        return tuple(k for k in self.obs_keys if not is_image_key(k))

    @property
    def num_lowdim_tokens(self) -> int:
        if not self.lowdim_keys:
            return 0
        return len(self.lowdim_keys) if self.lowdim_tokens == "per_key" else 1

    @property
    def multitask(self) -> bool:
        """Whether the policy takes a task (its vocabulary is not empty)."""
        return bool(self.tasks)

    def task_index(self, task: str | int) -> int:
        """A task's index in the vocabulary, from its name or its index; ValueError naming
        the vocabulary for an unknown one."""
        if not self.tasks:
            raise ValueError(f"task {task!r}: this policy was trained on one task and takes none")
        if isinstance(task, str):
            if task not in self.tasks:
                raise ValueError(f"task {task!r} is not one of the policy's {list(self.tasks)}")
            return self.tasks.index(task)
        i = int(task)
        if i != task or not 0 <= i < len(self.tasks):
            raise ValueError(
                f"task index {task!r}: the policy's tasks are 0..{len(self.tasks) - 1} "
                f"({list(self.tasks)})"
            )
        return i

    @property
    def num_tokens(self) -> int:
        """N: tokens per step = cameras x tokens_per_camera + low-dim tokens."""
        return len(self.camera_keys) * self.tokens_per_camera + self.num_lowdim_tokens

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["obs_keys"], d["conv_channels"] = list(self.obs_keys), list(self.conv_channels)
        d["aux_final_keys"] = list(self.aux_final_keys)
        # A single-task config is written as before the field existed (byte-identical files).
        if self.tasks:
            d["tasks"] = list(self.tasks)
        else:
            del d["tasks"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PolicyConfig:
        """Inverse of `to_dict`; unknown fields are an error naming them."""
        nested = config_fields()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown PolicyConfig fields {unknown}; known: {sorted(known)}")
        kw = dict(d)
        for name, sub in nested.items():
            if name in kw:
                sub_known = {f.name for f in fields(sub)}
                bad = sorted(set(kw[name]) - sub_known)
                if bad:
                    raise ValueError(f"unknown {sub.__name__} fields {bad} under {name!r}")
                kw[name] = sub(**kw[name])
        return cls(**kw)
