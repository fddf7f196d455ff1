"""TTMConfig: LeRobot's configuration of the TTM policy (`--policy.type=ttm`).

The architecture fields are a subset of `ttm_policy.config.PolicyConfig` (and its TTM core
settings, `ttm_policy.ttm.TTMConfig`), with that package's defaults; `policy_config()` turns
this config plus LeRobot's input/output features into the PolicyConfig our network is built
from. Normalisation is LeRobot's (its processors, `processor_ttm.py`) with our rules: low-dim
inputs and actions min/max -> [-1, 1], images unnormalised (the tokenizer scales uint8).

Memory and LeRobot's sampler. lerobot-train draws single frames at random; with
`n_obs_steps` T, each sample is the window of the T frames up to that frame (LeRobot pads
before the episode start and marks the pad). The TTM is unrolled over the window from empty
memory at its first real frame, and every real frame's action is a target. At inference
(`select_action`) the memory is carried from the episode's first step, so the two agree only
on windows that start at the episode start: choose T >= the episode length (Meta-World reach:
~30-90 steps) to train exactly what inference runs, as our own trainer does; a shorter T trains
a memory that never saw more than T steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import NormalizationMode
from lerobot.optim.optimizers import AdamWConfig
from lerobot.optim.schedulers import CosineDecayWithWarmupSchedulerConfig

from ttm_policy.config import PolicyConfig
from ttm_policy.cores import CORES
from ttm_policy.lerobot_checkpoint import obs_key, policy_config

__all__ = ["TTMConfig", "obs_key"]


@PreTrainedConfig.register_subclass("ttm")
@dataclass
class TTMConfig(PreTrainedConfig):
    """The TTM policy (Ryoo et al., CVPR 2023) on LeRobot: camera images and the robot state
    as tokens, a Token Turing Machine memory carried across control steps, one action per step."""

    n_obs_steps: int = 64
    """T: frames per training sample, the window up to the sampled frame (see the module doc)."""
    image_size: int = 64
    """Images are resized (area) to this side before the tokenizer: LeRobot's Meta-World env
    renders 480x480, our recipe trains on 64 px."""
    crop_fraction: float = 0.9
    """Random crop side in training (central at inference), as a fraction of image_size."""
    core: str = "ttm"
    """Temporal core from ttm_policy.cores: ttm, ttm-memoryless, lstm, transformer, none, gru."""
    dim: int = 128
    """D: token width (PolicyConfig.dim)."""
    tokens_per_camera: int = 8
    """TokenLearner tokens per camera (RT-1's 8)."""
    memory_tokens: int = 64
    """M: TTM memory tokens (the paper's 64)."""
    read_tokens: int = 8
    """R: tokens read from [memory ‖ inputs] per step (the paper's 8)."""
    layers: int = 4
    """Transformer layers of the TTM processing unit."""
    head_hidden: int = 256
    """Hidden width of the action head's MLP."""

    normalization_mapping: dict[str, NormalizationMode] = field(
        default_factory=lambda: {
            "VISUAL": NormalizationMode.IDENTITY,
            "STATE": NormalizationMode.MIN_MAX,
            "ENV": NormalizationMode.MIN_MAX,
            "ACTION": NormalizationMode.MIN_MAX,
        }
    )

    optimizer_lr: float = 2e-3
    """ttm-train's recipe: AdamW 2e-3, weight decay 0.01, cosine decay after a warm-up."""
    optimizer_weight_decay: float = 0.01
    scheduler_warmup_steps: int = 100
    scheduler_decay_steps: int = 2000

    def __post_init__(self):
        super().__post_init__()
        if self.n_obs_steps < 1:
            raise ValueError(f"TTMConfig.n_obs_steps={self.n_obs_steps}: must be >= 1")
        if self.image_size < 8:
            raise ValueError(f"TTMConfig.image_size={self.image_size}: use at least 8 px")
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"TTMConfig.crop_fraction={self.crop_fraction}: must be in (0, 1]")
        if self.core not in CORES:
            raise ValueError(f"TTMConfig.core={self.core!r}: choose one of {sorted(CORES)}")

    # ------------------------------------------------------------------ LeRobot's interface

    @property
    def observation_delta_indices(self) -> list[int]:
        return list(range(1 - self.n_obs_steps, 1))

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(1 - self.n_obs_steps, 1))  # the action of every frame of the window

    @property
    def reward_delta_indices(self) -> None:
        return None

    def get_optimizer_preset(self) -> AdamWConfig:
        return AdamWConfig(lr=self.optimizer_lr, weight_decay=self.optimizer_weight_decay)

    def get_scheduler_preset(self) -> CosineDecayWithWarmupSchedulerConfig:
        return CosineDecayWithWarmupSchedulerConfig(
            num_warmup_steps=self.scheduler_warmup_steps,
            num_decay_steps=self.scheduler_decay_steps,
            peak_lr=self.optimizer_lr,
            decay_lr=self.optimizer_lr * 0.01,
        )

    def validate_features(self) -> None:
        if not self.image_features and not self.robot_state_feature and not self.env_state_feature:
            raise ValueError(
                "The TTM policy needs at least one input: a camera (observation.image[s.*]), "
                "observation.state or observation.environment_state"
            )
        if self.action_feature is None or len(self.action_feature.shape) != 1:
            raise ValueError(
                f"The TTM policy needs a 1-D `action` output; got {self.action_feature}"
            )

    # ------------------------------------------------------------------ ours

    def policy_config(self) -> PolicyConfig:
        """The ttm_policy PolicyConfig of the network, from this config and the features (the
        same function rebuilds it from a saved checkpoint: `ttm-convert lerobot-policy`)."""
        inputs = {k: (ft.type.name, tuple(ft.shape)) for k, ft in self.input_features.items()}
        return policy_config(vars(self), inputs, int(self.action_feature.shape[0]))
