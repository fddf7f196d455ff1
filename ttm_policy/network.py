"""PolicyNetwork: the pure network, observations -> tokens -> temporal core -> action head.

Dimensions: B batch, T time steps, N tokens per step, R the core's output tokens, D width,
K action horizon, A action width, F head input width, H, W image size, Dl a low-dim width,
J tasks of a multi-task policy.

    obs[<camera>_image] uint8 (B, T, H, W, 3) -crop-> ConvTokenizer -> (B, T, k, D) per camera
    obs[<low-dim key>]  normalised float (B, T, Dl) -> LowDimTokenizer -> (B, T, n, D)
    tokens = [camera tokens ‖ low-dim token(s)] + source embedding        (B, T, N, D)
    multi-task: tokens = TaskFiLM(tokens, task (B,))                      (B, T, N, D)
    core(tokens) -> (B, T, R, D) -> features (B, T, F) -> head -> normalised chunks (B, T, K, A)

It knows no statistics and keeps no episode state: normalisation, observation checks, the
action queue and `reset()` belong to the policy wrapper (`ttm_policy.policy.TTMPolicy`), as in
LeRobot's ACT. The temporal core comes from the registry (`ttm_policy.cores`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ttm_policy.augment import center_crop, random_crop
from ttm_policy.config import PolicyConfig
from ttm_policy.cores import spec
from ttm_policy.encoders import ConvTokenizer, LowDimTokenizer
from ttm_policy.heads import ContinuousHead, DiscreteHead, GMMHead


def _crop(images: torch.Tensor, size: int, random: bool) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> (B, T, size, size, 3): random (one window per sample, the same
    for all its T steps, as robomimic's crop randomizer) or central (torchvision's rounding)."""
    if images.shape[2] == size and images.shape[3] == size:
        return images
    return random_crop(images, size) if random else center_crop(images, size)


class TaskFiLM(nn.Module):
    """Task conditioning of a multi-task policy: FiLM of every input token by a learned
    per-task scale and shift, tokens * (1 + gamma[task]) + beta[task].

    RT-1 conditions its image tokens on the instruction the same way (FiLM layers in the
    image encoder, identity at initialisation). Here the FiLM acts on the tokens, after the
    tokenizers, rather than inside the convolutions; the alternative, one learned task token
    appended to the core's inputs, was not chosen because
    - the TTM's read chooses R of its [memory ‖ inputs] tokens by their content, so one task
      token can go unread at a step; with FiLM every token, image and proprioception, carries
      the task, whatever the read (or the LSTM, or the Transformer) takes from them;
    - N stays the same: every core, its settings (`input_tokens`, the `linear` summariser's
      per-position weights), the Transformer's KV cache and the exported state shapes are
      those of the single-task policy.
    gamma starts at zero (identity scale, as RT-1 initialises its FiLM); beta starts small and
    random like the source embeddings, so the tasks differ from the first step on."""

    def __init__(self, num_tasks: int, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(num_tasks, dim))  # gamma (J, D)
        self.shift = nn.Parameter(torch.randn(num_tasks, dim) * 0.02)  # beta (J, D)

    def forward(self, tokens: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """tokens (B, T, N, D), task (B,) int64 in [0, J) -> tokens (B, T, N, D)."""
        gamma = self.scale[task][:, None, None]  # (B, 1, 1, D)
        beta = self.shift[task][:, None, None]  # (B, 1, 1, D)
        return tokens * (1.0 + gamma) + beta


class PolicyNetwork(nn.Module):
    """Tokenizers, the temporal core, the action head (and the auxiliary head), for a
    resolved PolicyConfig (`lowdim_dims` known)."""

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
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
            self.head = ContinuousHead(
                hidden=cfg.head_hidden, loss=cfg.loss, binary_gripper=cfg.binary_gripper, **common
            )
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
        # Multi-task only (created last, so a single-task network draws the same initial
        # weights as before the option existed).
        self.task_film = TaskFiLM(len(cfg.tasks), D) if cfg.tasks else None

    def check_task(self, task: torch.Tensor | None, batch: int) -> None:
        """ValueError unless `task` is what this network takes: None for a single-task one, a
        (B,) integer tensor for a multi-task one (its values are checked by the policy)."""
        tasks = self.cfg.tasks
        if not tasks:
            if task is not None:
                raise ValueError(
                    "a task was given, but this policy was trained on one task and takes none"
                )
            return
        if task is None:
            raise ValueError(
                f"this multi-task policy needs the task: one of {list(tasks)} (by name or "
                "index; batch['task'] (B,) in training)"
            )
        if task.shape != (batch,) or task.is_floating_point() or task.dtype == torch.bool:
            raise ValueError(
                f"task must be an integer tensor (B,) = ({batch},), got {task.dtype} "
                f"{tuple(task.shape)}"
            )

    def encode(
        self,
        obs: dict[str, torch.Tensor],
        *,
        random_crop: bool,
        task: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """obs: key -> (B, T, H, W, 3) uint8 | (B, T, Dl) normalised, task (B,) int64 (a
        multi-task network; None otherwise) -> tokens (B, T, N, D)."""
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
            B, T = obs[cfg.lowdim_keys[0]].shape[:2]
            flat = {k: obs[k].flatten(0, 1) for k in cfg.lowdim_keys}  # (B*T, Dl)
            parts.append(self.lowdim(flat).unflatten(0, (B, T)))  # (B, T, n, D)
        tokens = torch.cat(parts, dim=2)  # (B, T, N, D)
        tokens = tokens + self.source_embedding[self.token_source]
        self.check_task(task, tokens.shape[0])
        if self.task_film is not None:
            tokens = self.task_film(tokens, task.long())  # (B, T, N, D)
        return tokens

    def features(self, out: torch.Tensor) -> torch.Tensor:
        """Core outputs (..., R, D) -> head input (..., R*D) or (..., D)."""
        return out.flatten(-2) if self.cfg.head_input == "flatten" else out.mean(-2)

    def forward(
        self,
        obs: dict[str, torch.Tensor],
        reset: torch.Tensor,
        *,
        random_crop: bool,
        bptt: int | None = None,
        memory: Any = None,
        task: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Any]:
        """Sequence form: obs (B, T, ...) with normalised low-dim values, reset (B, T) bool
        (new episode before that step), the core's state before step 0 (None: an episode
        start), task (B,) (multi-task) -> (head input features (B, T, F), the core's state
        after step T-1)."""
        tokens = self.encode(obs, random_crop=random_crop, task=task)
        out, state = self.core(tokens, memory=memory, reset=reset, bptt=bptt)
        return self.features(out), state  # (B, T, F)

    def step(
        self,
        obs: dict[str, torch.Tensor],
        state: Any,
        task: torch.Tensor | None = None,
        *,
        sample: bool | None = None,
        gripper_probability: bool = False,
    ) -> tuple[Any, ...]:
        """One control step: obs key -> (B, ...) (images uint8, low-dim normalised), state,
        task (B,) (multi-task) -> (normalised chunk (B, K, A), new state) and, with
        `gripper_probability`, a binary gripper's probability of "close" (B, K) (None without
        one). Central crop; the most likely action unless `sample` (default:
        `sample_actions`)."""
        x = {k: v.unsqueeze(1) for k, v in obs.items()}  # (B, 1, ...)
        tokens = self.encode(x, random_crop=False, task=task)[:, 0]  # (B, N, D)
        out, state = self.core.step(tokens, state)  # (B, R, D)
        params = self.head(self.features(out))
        sample = self.cfg.sample_actions if sample is None else sample
        chunk = self.head.predict(params, sample=sample)
        if not gripper_probability:
            return chunk, state  # (B, K, A)
        binary = getattr(self.head, "binary_gripper", False)
        return chunk, state, self.head.close_probability(params) if binary else None
