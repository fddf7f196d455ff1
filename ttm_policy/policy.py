"""TTMPolicy: observations -> tokens -> temporal core -> action head, with its normalisation.

Dimensions: B batch (envs at inference), T time steps, N tokens per step, R the core's
output tokens, D width, K action horizon (chunk length), A action width (7), H, W image
size, Dl a low-dim key's width.

    obs[<camera>_image] uint8 (B, T, H, W, 3) -crop-> ConvTokenizer -> (B, T, k, D) per camera
    obs[<low-dim key>]  float (B, T, Dl) -normalise-> LowDimTokenizer -> (B, T, 1, D)
    tokens = [camera tokens ‖ low-dim token(s)] + source embedding   (B, T, N, D)
    core(tokens, reset=is_first | t == 0) -> (B, T, R, D) -> flatten -> head -> (B, T, K, A)

One class for every temporal core (`PolicyConfig.core`), composed, not subclassed:
    ttm             TokenTuringMachine (memory M tokens, reads R)
    ttm-memoryless  the same module reading only the step's tokens (paper ablation)
    lstm            LSTMCore (robomimic BC-RNN)
    transformer     CausalTransformerCore over the last `transformer.window` steps (RT-1)
    none            single-frame BC: the `transformer` core's blocks with window 1, i.e. a
                    Transformer over this step's N tokens; its state is an empty KV cache
                    (and a step counter), so it has the same interface as the others.

Normalisation (stored in the weights, from `compute_stats` of the training split):
- low-dim observations: per dimension, [min, max] -> [-1, 1] where max - min > 1e-6; a
  dimension constant in the training data (range <= 1e-6) is only centred (x - min), so it
  gives 0 there and changes at its raw scale elsewhere (a clamped std would blow it up by
  1e6). Min/max rather than mean/std: bounded token inputs, and the same rule as actions.
- actions: per dimension, [min, max] -> [-1, 1] where the range > 1e-6; a constant dimension
  passes through unchanged. `select_action` un-normalises and clips to [-1, 1] (the env's
  bounds).
- images: uint8 -> [-1, 1] inside the tokenizer; no statistics.

Action chunks (`action_horizon` K > 1, ACT): the head predicts the K actions from each step
on. At inference the core is stepped on EVERY control step, whatever `chunk_execution` says,
so a memory core sees every frame; `queue` then executes a chunk's K actions one by one and
uses the head's prediction only when the queue runs empty (re-plan every K steps);
`ensemble` averages, for the current step, the predictions of the last K chunks with ACT's
exponential weights w_i = exp(-m i), i = 0 for the oldest chunk.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import tyro
from torch import nn

from ttm_policy.augment import center_crop, random_crop
from ttm_policy.baselines import (
    CausalTransformerConfig,
    LSTMConfig,
)
from ttm_policy.cores import CORES, Core, config_fields, spec
from ttm_policy.encoders import ConvTokenizer, LowDimTokenizer
from ttm_policy.gru import GRUConfig
from ttm_policy.heads import ContinuousHead, DiscreteHead, GMMHead, masked_mean
from ttm_policy.ttm import TTMConfig

Head = Literal["continuous", "gmm", "discrete"]
RANGE_EPS = 1e-6  # a stats range at or below this counts as a constant dimension

# robomimic's Lift image observations (the same tuple as train.data.LIFT_OBS_KEYS; the model
# layer imports nothing from train/).
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


def _policy_ttm() -> TTMConfig:
    # The official sizes (M=64, R=8, 4 layers, MLP 512) at D=128. Measured on the default
    # Lift config (2 cameras, B=16, T=10, 1 CPU thread): a training step takes 0.89 s, of
    # which the two conv tokenizers take 0.52 s, so shrinking the TTM buys little; no
    # measured reason to leave the paper's sizes. dim/input_tokens/memoryless are
    # overwritten by PolicyConfig.
    return TTMConfig(dim=128)


# The core configs as ttm-train's CLI (tyro) offers them: without the width, token count and
# memory-less switch, which PolicyConfig.__post_init__ sets from `dim`, `num_tokens` and `core`
# (a flag for them would do nothing). PolicyConfig holds plain core configs, never these, and
# checks them as such once those sizes are set (so `--model.dim 96 --model.ttm.heads 12` and
# `--model.ttm.summariser linear` are judged with the real D and N).
@dataclass
class _TTMFlags(TTMConfig):
    dim: tyro.conf.Suppress[int] = 128
    input_tokens: tyro.conf.Suppress[int | None] = None
    memoryless: tyro.conf.Suppress[bool] = False

    def __post_init__(self) -> None:
        """Checked by PolicyConfig as a plain TTMConfig with its dim and input_tokens."""


@dataclass
class _LSTMFlags(LSTMConfig):
    dim: tyro.conf.Suppress[int] = 128
    input_tokens: tyro.conf.Suppress[int] = 8


@dataclass
class _TransformerFlags(CausalTransformerConfig):
    dim: tyro.conf.Suppress[int] = 128
    input_tokens: tyro.conf.Suppress[int] = 8

    def __post_init__(self) -> None:
        """Checked by PolicyConfig as a plain CausalTransformerConfig with its dim."""


def _synced(cls: type, cfg: Any, **shared: Any) -> Any:
    """`cfg` (a `cls`, or its CLI view above) as a plain `cls` with the sizes PolicyConfig owns."""
    return cls(**{**{f.name: getattr(cfg, f.name) for f in fields(cls) if f.init}, **shared})


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"PolicyConfig.{name}={value!r}: choose one of {choices}")


@dataclass
class PolicyConfig:
    """Everything that defines a policy's architecture; saved as config.json beside it."""

    # obs_keys, image_size and core: not flags of ttm-train (tyro.conf.Suppress), which sets
    # them from the dataset and its own --obs-keys and --policy.
    obs_keys: tyro.conf.Suppress[tuple[str, ...]] = LIFT_OBS_KEYS
    """Observation keys consumed: `<camera>_image` (uint8 HxWx3) and low-dim keys, in token order."""
    image_size: tyro.conf.Suppress[int] = 84
    """H = W of the camera images the env gives (robomimic's 84)."""
    crop_size: int = 76
    """Side of the crop the tokenizer sees: random per sequence in training, central at
    inference (robomimic crops 84 -> 76). Set it to image_size for no crop."""
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
    ttm: Annotated[TTMConfig, tyro.conf.arg(constructor=_TTMFlags)] = field(
        default_factory=_policy_ttm
    )
    """TTM core (`ttm`, `ttm-memoryless`); dim, input_tokens, memoryless are set from this config."""
    lstm: Annotated[LSTMConfig, tyro.conf.arg(constructor=_LSTMFlags)] = field(
        default_factory=LSTMConfig
    )
    """LSTM core (robomimic BC-RNN: 2 x 400); dim and input_tokens are set from this config."""
    transformer: Annotated[
        CausalTransformerConfig, tyro.conf.arg(constructor=_TransformerFlags)
    ] = field(default_factory=CausalTransformerConfig)
    """Causal Transformer core (window K=6 as RT-1); also the per-frame net of core `none`
    (with window 1); dim and input_tokens are set from this config."""
    gru: GRUConfig = field(default_factory=GRUConfig)
    """GRU core; dim and input_tokens are set from this config."""
    head: Head = "continuous"
    """Action head: continuous regression, gmm (robomimic), discrete (RT-1 bins)."""
    loss: Literal["l1", "mse"] = "l1"
    """Regression loss of the continuous head (ACT uses L1, robomimic BC uses MSE)."""
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
    """gmm/discrete: sample actions at inference instead of taking the most likely one."""
    action_dim: int = 7
    """A: OSC_POSE deltas (6) + gripper."""
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

    def __post_init__(self) -> None:
        self.obs_keys = tuple(self.obs_keys)
        self.aux_final_keys = tuple(self.aux_final_keys)
        self.conv_channels = tuple(self.conv_channels)
        self.lowdim_dims = {str(k): int(v) for k, v in dict(self.lowdim_dims).items()}
        if not self.obs_keys:
            raise ValueError(
                "PolicyConfig.obs_keys is empty: name at least one key, e.g. agentview_image"
            )
        dups = sorted({k for k in self.obs_keys if self.obs_keys.count(k) > 1})
        if dups:
            raise ValueError(f"PolicyConfig.obs_keys lists {dups} more than once: list each once")
        bad = [k for k in self.obs_keys if "." in k or not k]
        if bad:
            raise ValueError(f"PolicyConfig.obs_keys {bad}: keys may not be empty or contain '.'")
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
    def num_tokens(self) -> int:
        """N: tokens per step = cameras x tokens_per_camera + low-dim tokens."""
        return len(self.camera_keys) * self.tokens_per_camera + self.num_lowdim_tokens

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["obs_keys"], d["conv_channels"] = list(self.obs_keys), list(self.conv_channels)
        d["aux_final_keys"] = list(self.aux_final_keys)
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


# ----------------------------------------------------------------------------- normalisation


class Range(nn.Module):
    """Per-dimension [min, max] <-> [-1, 1]; buffers `min`, `max` (Dl,) travel in the weights.

    Where max - min <= RANGE_EPS the dimension is constant in the data: `constant="centre"`
    maps it to x - min, `constant="identity"` passes it through.
    """

    def __init__(self, size: int, *, constant: Literal["centre", "identity"]):
        super().__init__()
        self.constant = constant
        self.register_buffer("min", torch.zeros(size))
        self.register_buffer("max", torch.ones(size))

    def set(self, lo, hi, name: str) -> None:
        lo = torch.as_tensor(np.asarray(lo, np.float32)).reshape(-1)
        hi = torch.as_tensor(np.asarray(hi, np.float32)).reshape(-1)
        n = self.min.numel()
        if lo.numel() != n or hi.numel() != n:
            raise ValueError(
                f"stats {name}/min and {name}/max must have shape ({n},), got "
                f"{tuple(lo.shape)} and {tuple(hi.shape)}"
            )
        if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()) or (hi < lo).any():
            raise ValueError(
                f"stats {name}: min {lo.tolist()} / max {hi.tolist()} not finite min <= max"
            )
        self.min.copy_(lo)
        self.max.copy_(hi)

    def _affine(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = self.max - self.min
        ok = rng > RANGE_EPS  # (Dl,)
        half = torch.where(ok, rng / 2, torch.ones_like(rng))
        mid = (self.max + self.min) / 2
        centre = torch.where(
            ok, mid, self.min if self.constant == "centre" else torch.zeros_like(mid)
        )
        return ok, centre, half

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        _, centre, half = self._affine()
        return (x - centre) / half

    def unnormalize(self, y: torch.Tensor) -> torch.Tensor:
        _, centre, half = self._affine()
        return y * half + centre


class Normalizer(nn.Module):
    """The training data's statistics: `obs.<key>.{min,max}` and `action.{min,max}` buffers."""

    def __init__(self, *, lowdim_dims: dict[str, int], action_dim: int):
        super().__init__()
        self.obs = nn.ModuleDict({k: Range(d, constant="centre") for k, d in lowdim_dims.items()})
        self.action = Range(action_dim, constant="identity")

    def load_stats(self, stats: dict[str, Any]) -> None:
        """From `compute_stats` names: `obs/<key>/min`, `obs/<key>/max`, `action/min`, ..."""
        for name, r in [*((f"obs/{k}", r) for k, r in self.obs.items()), ("action", self.action)]:
            missing = [f"{name}/{s}" for s in ("min", "max") if f"{name}/{s}" not in stats]
            if missing:
                raise KeyError(
                    f"normalisation stats lack {missing}; they hold {sorted(stats)} "
                    "(compute them with train.data.compute_stats on the training demos)"
                )
            r.set(stats[f"{name}/min"], stats[f"{name}/max"], name)


# ----------------------------------------------------------------------------- policy


def _lowdim_dims_from(cfg: PolicyConfig, stats: dict[str, Any] | None) -> dict[str, int]:
    dims = dict(cfg.lowdim_dims)
    for k in cfg.lowdim_keys:
        if stats is not None and f"obs/{k}/min" in stats:
            d = int(np.asarray(stats[f"obs/{k}/min"]).size)
            if k in dims and dims[k] != d:
                raise ValueError(
                    f"PolicyConfig.lowdim_dims[{k!r}]={dims[k]} but the stats give {d} dimensions"
                )
            dims[k] = d
        if k not in dims:
            raise ValueError(
                f"low-dim key {k!r}: width unknown; pass stats with obs/{k}/min "
                f"or set PolicyConfig.lowdim_dims[{k!r}]"
            )
    return {k: dims[k] for k in cfg.lowdim_keys}


def _crop(images: torch.Tensor, size: int, random: bool) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> (B, T, size, size, 3): random (one window per sample, the same
    for all its T steps, as robomimic's crop randomizer) or central (torchvision's rounding)."""
    if images.shape[2] == size and images.shape[3] == size:
        return images
    return random_crop(images, size) if random else center_crop(images, size)


class TTMPolicy(nn.Module):
    """A visuomotor policy: `forward(batch) -> (loss, metrics)` for training;
    `reset()` + `select_action(obs) -> action` for control; `save_pretrained` /
    `from_pretrained` for checkpoints (config.json + model.safetensors)."""

    def __init__(self, cfg: PolicyConfig, stats: dict[str, Any] | None = None):
        """stats: `compute_stats(train_demos)` (`obs/<key>/min|max`, `action/min|max`, ...);
        None only when weights that hold them are loaded next (`from_pretrained`)."""
        super().__init__()
        cfg = replace(cfg, lowdim_dims=_lowdim_dims_from(cfg, stats))
        self.cfg = cfg
        D = cfg.dim
        self.cameras = nn.ModuleDict(
            {
                k: ConvTokenizer(
                    dim=D,
                    image_size=cfg.crop_size,
                    num_tokens=cfg.tokens_per_camera,
                    channels=cfg.conv_channels,
                )
                for k in cfg.camera_keys
            }
        )
        self.lowdim = (
            LowDimTokenizer(dims=cfg.lowdim_dims, dim=D, per_key=cfg.lowdim_tokens == "per_key")
            if cfg.lowdim_keys
            else None
        )
        # One learned embedding per source (camera, low-dim token), added to its tokens.
        sources = [i for i in range(len(cfg.camera_keys)) for _ in range(cfg.tokens_per_camera)]
        sources += [len(cfg.camera_keys) + i for i in range(cfg.num_lowdim_tokens)]
        self.register_buffer("token_source", torch.tensor(sources), persistent=False)  # (N,)
        self.source_embedding = nn.Parameter(torch.randn(max(sources) + 1, D) * 0.02)

        core = spec(cfg.core)  # the registry: ttm_policy.cores
        self.core = core.make(getattr(cfg, core.config_field))

        R = self.core.out_tokens
        in_dim = R * D if cfg.head_input == "flatten" else D
        common = dict(in_dim=in_dim, action_dim=cfg.action_dim, horizon=cfg.action_horizon)
        if cfg.head == "continuous":
            self.head = ContinuousHead(hidden=cfg.head_hidden, loss=cfg.loss, **common)
        elif cfg.head == "gmm":
            self.head = GMMHead(
                hidden=cfg.head_hidden, modes=cfg.gmm_modes, min_std=cfg.gmm_min_std, **common
            )
        else:
            self.head = DiscreteHead(hidden=cfg.head_hidden, bins=cfg.bins, **common)
        # Auxiliary: the episode's final value of `aux_final_keys`, from every step (training only).
        # Checked here, not in PolicyConfig: obs_keys are final only once the data is known.
        unread = [k for k in cfg.aux_final_keys if k not in cfg.lowdim_keys]
        if unread:
            raise ValueError(
                f"PolicyConfig.aux_final_keys {unread} are not low-dim obs_keys "
                f"{list(cfg.lowdim_keys)}: name keys the policy reads (e.g. robot0_eef_pos)"
            )
        aux_dim = sum(cfg.lowdim_dims[k] for k in cfg.aux_final_keys)
        self.aux_head = (
            nn.Sequential(
                nn.Linear(in_dim, cfg.head_hidden), nn.GELU(), nn.Linear(cfg.head_hidden, aux_dim)
            )
            if aux_dim
            else None
        )

        self.normalizer = Normalizer(lowdim_dims=cfg.lowdim_dims, action_dim=cfg.action_dim)
        if stats is not None:
            self.normalizer.load_stats(stats)
        self.reset()

    @property
    def device(self) -> torch.device:
        return self.source_embedding.device

    # ------------------------------------------------------------------ shared path

    def encode(self, obs: dict[str, torch.Tensor], *, random_crop: bool) -> torch.Tensor:
        """obs: key -> (B, T, H, W, 3) uint8 | (B, T, Dl) -> tokens (B, T, N, D)."""
        cfg = self.cfg
        missing = [k for k in cfg.obs_keys if k not in obs]
        if missing:
            raise KeyError(f"observation lacks keys {missing}; it holds {sorted(obs)}")
        parts = []
        for key, tokenizer in self.cameras.items():
            x = obs[key]
            ok_size = (cfg.image_size, cfg.image_size), (cfg.crop_size, cfg.crop_size)
            if x.ndim != 5 or x.shape[-1] != 3 or tuple(x.shape[2:4]) not in ok_size:
                raise ValueError(
                    f"obs[{key!r}] must be uint8 (B, T, {cfg.image_size}, {cfg.image_size}, 3) "
                    f"(or already cropped to {cfg.crop_size}), got {tuple(x.shape)}"
                )
            x = _crop(x, cfg.crop_size, random_crop)  # (B, T, crop, crop, 3)
            B, T = x.shape[:2]
            parts.append(tokenizer(x.flatten(0, 1)).unflatten(0, (B, T)))  # (B, T, k, D)
        if self.lowdim is not None:
            norm = {}
            for key, r in self.normalizer.obs.items():
                x = obs[key]
                want = cfg.lowdim_dims[key]
                if x.ndim != 3 or x.shape[-1] != want:
                    raise ValueError(
                        f"obs[{key!r}] must have shape (B, T, {want}), got {tuple(x.shape)}"
                    )
                norm[key] = r.normalize(x.to(self.device, torch.float32)).flatten(0, 1)  # (B*T, Dl)
            B, T = obs[cfg.lowdim_keys[0]].shape[:2]
            parts.append(self.lowdim(norm).unflatten(0, (B, T)))  # (B, T, n, D)
        tokens = torch.cat(parts, dim=2)  # (B, T, N, D)
        return tokens + self.source_embedding[self.token_source]

    def features(self, out: torch.Tensor) -> torch.Tensor:
        """Core outputs (..., R, D) -> head input (..., R*D) or (..., D)."""
        return out.flatten(-2) if self.cfg.head_input == "flatten" else out.mean(-2)

    # ------------------------------------------------------------------ training

    def targets(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised targets (B, T, K, A) and their validity (B, T, K) from the batch."""
        cfg = self.cfg
        a = batch["actions"].to(self.device, torch.float32)
        K, A = cfg.action_horizon, cfg.action_dim
        mask = batch.get("mask")
        if a.ndim == 3 and K == 1:
            a = a.unsqueeze(2)  # (B, T, 1, A)
        if a.ndim != 4 or tuple(a.shape[2:]) != (K, A):
            raise ValueError(
                f"batch['actions'] must have shape (B, T, {K}, {A})"
                + (f" or (B, T, {A})" if K == 1 else "")
                + f" for action_horizon={K}, got {tuple(a.shape)} "
                "(make the dataset with the same action_horizon)"
            )
        B, T = a.shape[:2]
        valid = torch.ones(B, T, K, dtype=torch.bool, device=self.device)
        if mask is not None:
            valid &= mask.to(self.device, torch.bool)[:, :, None]
        if "action_mask" in batch and a.shape[2] == batch["action_mask"].shape[-1]:
            valid &= batch["action_mask"].to(self.device, torch.bool).view(B, T, K)
        return self.normalizer.action.normalize(a), valid

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss on a batch in the data layer's layout (see train/data.py): obs,
        actions, mask, is_first. Unrolls the core over T with memory reset where
        `is_first | t == 0`. Returns (loss, metrics) with `losses/...` and `metrics/...` keys."""
        target, valid = self.targets(batch)
        B, T = target.shape[:2]
        obs = {k: batch["obs"][k].to(self.device) for k in self.cfg.obs_keys if k in batch["obs"]}
        tokens = self.encode(obs, random_crop=self.training)  # (B, T, N, D)
        t0 = torch.arange(T, device=self.device) == 0  # (T,)
        is_first = batch.get("is_first")
        reset = t0.expand(B, T) if is_first is None else is_first.to(self.device, torch.bool) | t0
        out, _ = self.core(tokens, reset=reset, bptt=self.cfg.bptt)  # (B, T, R, D)
        feats = self.features(out)  # (B, T, F)
        params = self.head(feats)
        loss, parts = self.head.loss(params, target, valid)
        if self.aux_head is not None:
            parts["aux_final"] = self._aux_loss(feats, batch, valid[..., 0])
            loss = loss + self.cfg.aux_weight * parts["aux_final"]
        with torch.no_grad():
            pred = self.head.predict(params)  # (B, T, K, A)
            l1 = masked_mean((pred - target).abs().mean(-1), valid)
        metrics = {"losses/total": loss.item()}
        metrics.update({f"losses/{k}": v.item() for k, v in parts.items()})
        metrics["metrics/action_l1_normalised"] = l1.item()
        metrics["metrics/valid_steps"] = float(valid[..., 0].sum().item())
        return loss, metrics

    def _aux_loss(self, feats: torch.Tensor, batch: dict[str, Any], valid: torch.Tensor):
        """L1 between the predicted and the true normalised final values, over valid steps."""
        final = batch.get("final")
        missing = [k for k in self.cfg.aux_final_keys if final is None or k not in final]
        if missing:
            raise KeyError(
                f"aux_final_keys {missing} need batch['final'][key] (B, Dl), the episode's last "
                "value; the datasets of train/data.py provide it"
            )
        norm = self.normalizer.obs
        target = torch.cat(
            [
                norm[k].normalize(final[k].to(self.device, torch.float32))
                for k in self.cfg.aux_final_keys
            ],
            dim=-1,
        )  # (B, Daux)
        err = (self.aux_head(feats) - target[:, None]).abs().mean(-1)  # (B, T)
        return masked_mean(err, valid)

    @torch.no_grad()
    def predict_chunks(
        self, obs: dict[str, torch.Tensor], is_first: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Sequence form of inference: obs key -> (B, T, ...) -> the chunks every step
        predicts, un-normalised and clipped, (B, T, K, A). Central crop, most likely action;
        memory reset at t = 0 and where `is_first` (B, T). No queue / ensembling."""
        B, T = next(iter(obs.values())).shape[:2]
        obs = {k: v.to(self.device) for k, v in obs.items()}
        reset = torch.zeros(B, T, dtype=torch.bool, device=self.device)
        reset[:, 0] = True
        if is_first is not None:
            reset |= is_first.to(self.device, torch.bool)
        was_training = self.training
        self.eval()
        try:
            out, _ = self.core(self.encode(obs, random_crop=False), reset=reset)  # (B, T, R, D)
            chunks = self.head.predict(self.head(self.features(out)))  # (B, T, K, A)
        finally:
            self.train(was_training)
        return self.normalizer.action.unnormalize(chunks).clamp(-1.0, 1.0)

    # ------------------------------------------------------------------ control

    def reset(self, mask: np.ndarray | torch.Tensor | None = None) -> None:
        """Start new episodes: all (mask None), or the envs where mask (B,) is True."""
        if mask is None or self._state is None:
            self._state = None  # created at the next select_action, for its batch size
            self._queue = self._queue_pos = self._ens = self._ens_valid = None
            return
        m = torch.as_tensor(np.asarray(mask), dtype=torch.bool, device=self.device).reshape(-1)
        if m.numel() != self._queue_pos.numel():
            raise ValueError(
                f"reset mask has {m.numel()} entries, but the policy runs {self._queue_pos.numel()} envs"
            )
        self._state = self.core.reset_memory(self._state, m)
        self._queue_pos[m] = self.cfg.action_horizon  # empty queue
        self._ens_valid[m] = False

    def _obs_tensors(self, obs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], bool]:
        """One step's env dict -> key: (B, ...) tensors; True if obs had no batch dim."""
        cfg = self.cfg
        missing = [k for k in cfg.obs_keys if k not in obs]
        if missing:
            raise KeyError(f"observation lacks keys {missing}; it holds {sorted(obs)}")
        out, single = {}, None
        for k in cfg.obs_keys:
            x = np.asarray(obs[k])
            base = 3 if is_image_key(k) else 1  # ndim of one unbatched observation
            if x.ndim not in (base, base + 1):
                want = (
                    f"({cfg.image_size}, {cfg.image_size}, 3)"
                    if base == 3
                    else f"({cfg.lowdim_dims[k]},)"
                )
                raise ValueError(
                    f"obs[{k!r}] must have shape {want} or (B, *{want}), got {x.shape}"
                )
            s = x.ndim == base
            if single is not None and s != single:
                raise ValueError(f"obs[{k!r}] shape {x.shape}: mixes batched and unbatched keys")
            single = s
            if is_image_key(k):
                if x.dtype != np.uint8:
                    raise ValueError(f"obs[{k!r}] must be uint8 images, got dtype {x.dtype}")
            else:
                if x.shape[-1] != cfg.lowdim_dims[k]:
                    raise ValueError(
                        f"obs[{k!r}] has width {x.shape[-1]}, expected {cfg.lowdim_dims[k]}"
                    )
                if x.dtype.kind not in "fiu":
                    raise ValueError(f"obs[{k!r}] must be numeric, got dtype {x.dtype}")
                with np.errstate(over="ignore"):  # an overflow becomes inf: refused below
                    x = x.astype(np.float32)
                if not np.isfinite(x).all():  # NaN/inf must never reach the memory
                    bad = np.argwhere(~np.isfinite(x)).tolist()
                    raise ValueError(
                        f"obs[{k!r}] has non-finite values at {bad[:8]}; the policy state is "
                        "left as it was"
                    )
            t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
            out[k] = t[None] if s else t  # (B, ...)
        return out, bool(single)

    def _execute(self, chunk: torch.Tensor) -> torch.Tensor:
        """chunk (B, K, A) predicted at this step (un-normalised, clipped) -> the action to
        run now (B, A)."""
        B, K, _ = chunk.shape
        if self.cfg.chunk_execution == "queue":
            refill = self._queue_pos >= K  # (B,)
            self._queue[refill] = chunk[refill]
            self._queue_pos[refill] = 0
            action = self._queue[torch.arange(B, device=chunk.device), self._queue_pos]  # (B, A)
            self._queue_pos += 1
            return action
        # Ensemble: slot j holds the chunk made j steps ago; its entry j is for now.
        self._ens = torch.cat([chunk[:, None], self._ens[:, :-1]], dim=1)  # (B, K, K, A)
        self._ens_valid = torch.cat(
            [torch.ones_like(self._ens_valid[:, :1]), self._ens_valid[:, :-1]], dim=1
        )  # (B, K)
        j = torch.arange(K, device=chunk.device)
        cand = self._ens[:, j, j]  # (B, K, A) predictions for this step, newest first
        n = self._ens_valid.sum(1, keepdim=True)  # (B, 1) chunks made since the reset
        age_rank = (n - 1 - j).clamp_min(0).to(chunk.dtype)  # (B, K) 0 = oldest valid chunk
        w = torch.exp(-self.cfg.ensemble_decay * age_rank) * self._ens_valid  # (B, K)
        return (w[..., None] * cand).sum(1) / w.sum(1, keepdim=True)  # (B, A)

    def init_state(self, batch_size: int):
        """The core's state at an episode start, for `batch_size` envs (see `step`)."""
        return self.core.init_memory(batch_size, device=self.device)

    def step(self, obs: dict[str, torch.Tensor], state) -> tuple[torch.Tensor, Any]:
        """Streaming form of one control step with explicit state (what an exporter traces):
        obs key -> one step's tensors, images uint8 (B, H, W, 3), low-dim (B, Dl); state from
        `init_state(B)` or the previous step -> (chunk (B, K, A) un-normalised and clipped to
        [-1, 1], new state). Central crop; the most likely action unless `sample_actions`.
        No queue or ensembling (that is `select_action`'s job); call under no_grad / eval."""
        x = {k: v.unsqueeze(1) for k, v in obs.items()}  # (B, 1, ...)
        tokens = self.encode(x, random_crop=False)[:, 0]  # (B, N, D)
        out, state = self.core.step(tokens, state)  # (B, R, D)
        chunk = self.head.predict(self.head(self.features(out)), sample=self.cfg.sample_actions)
        return self.normalizer.action.unnormalize(chunk).clamp(-1.0, 1.0), state  # (B, K, A)

    @torch.no_grad()
    def select_action(self, obs: dict[str, Any]) -> np.ndarray:
        """One control step: the env's obs dict (images uint8 (H, W, 3), low-dim (Dl,); or
        all with a leading env dim B) -> action float32 (A,) (or (B, A)) in [-1, 1].

        Runs in eval mode (central crop, no dropout) under no_grad and keeps the recurrent
        state and the action queue in the policy between calls; `reset()` at episode starts.
        """
        was_training = self.training
        self.eval()
        try:
            x, single = self._obs_tensors(obs)
            B = next(iter(x.values())).shape[0]
            if self._state is None:
                K, A = self.cfg.action_horizon, self.cfg.action_dim
                self._state = self.init_state(B)
                self._queue = torch.zeros(B, K, A, device=self.device)
                self._queue_pos = torch.full((B,), K, dtype=torch.long, device=self.device)
                self._ens = torch.zeros(B, K, K, A, device=self.device)
                self._ens_valid = torch.zeros(B, K, dtype=torch.bool, device=self.device)
            elif self._queue_pos.numel() != B:
                raise ValueError(
                    f"the policy runs {self._queue_pos.numel()} envs but obs has batch {B}: "
                    "call reset() before changing the number of envs"
                )
            chunk, state = self.step(x, self._state)  # (B, K, A)
            if not torch.isfinite(chunk).all():  # e.g. diverged weights: nothing is committed
                raise FloatingPointError(
                    "the policy produced a non-finite action; its state is left as it was "
                    "(check the checkpoint's weights)"
                )
            self._state = state
            action = self._execute(chunk)  # (B, A)
        finally:
            self.train(was_training)
        a = action.float().cpu().numpy()  # (B, A)
        return a[0] if single else a

    # ------------------------------------------------------------------ checkpoints

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `config.json` + `model.safetensors` (weights and stats) atomically."""
        from ttm_policy.checkpoint import save_pretrained

        return save_pretrained(self, directory)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str | torch.device = "cpu"
    ) -> TTMPolicy:
        """Rebuild from a directory written by `save_pretrained`, in eval mode on `device`."""
        from ttm_policy.checkpoint import load_pretrained

        return load_pretrained(directory, device=device)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
