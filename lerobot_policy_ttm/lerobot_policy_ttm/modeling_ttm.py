"""TTMPolicy: ttm_policy's network (`ttm_policy.network.PolicyNetwork`) as a LeRobot policy.

Dimensions: B batch, T window (n_obs_steps), A action width, D a low-dim width, H, W the
image size LeRobot gives, S the configured image_size.

LeRobot's preprocessor (processor_ttm.py) has already normalised what comes in: low-dim
inputs and actions min/max -> [-1, 1]; images float (.., 3, H, W) in [0, 1]. This wrapper
turns images into our layout (uint8 (.., S, S, 3)) and feature names into our keys, and runs
the network; the action head's output is in normalised units, which LeRobot's postprocessor
maps back. Nothing of the network is copied here: it is imported from ttm_policy.

    training   forward(batch): obs (B, T, ...), action (B, T, A), action_is_pad (B, T)
               -> the head's loss over the window's real frames
    control    reset() at an episode start; select_action(obs (B, ...)) -> (B, A), with the
               TTM memory carried from step to step inside the policy
"""

from __future__ import annotations

from typing import Any

import torch
from lerobot.policies.pretrained import PreTrainedPolicy
from torch import Tensor

from lerobot_policy_ttm.configuration_ttm import TTMConfig, obs_key
from ttm_policy.lerobot_checkpoint import area_resize
from ttm_policy.network import PolicyNetwork


class TTMPolicy(PreTrainedPolicy):
    """Token Turing Machine policy (Ryoo et al., CVPR 2023) on ttm_policy's network."""

    config_class = TTMConfig
    name = "ttm"

    def __init__(self, config: TTMConfig, **kwargs: Any):
        super().__init__(config)
        config.validate_features()
        self.config = config
        self.net = PolicyNetwork(config.policy_config())
        self.keys = {  # LeRobot feature -> our observation key
            k: obs_key(k, k in config.image_features) for k in config.input_features
        }
        self.reset()

    def get_optim_params(self) -> Any:
        return self.parameters()

    def reset(self) -> None:
        """Start a new episode: the memory is created empty at the next select_action."""
        self._memory = None

    # ------------------------------------------------------------------ inputs

    def _images(self, x: Tensor) -> Tensor:
        """float (..., 3, H, W) in [0, 1] -> uint8 (..., S, S, 3), resized by area averaging."""
        return area_resize(x, self.config.image_size)

    def _obs(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """LeRobot's batch -> our obs dict (images uint8 channels-last, low-dim float)."""
        out = {}
        for feature, key in self.keys.items():
            x = batch[feature]
            out[key] = self._images(x) if feature in self.config.image_features else x.float()
        return out

    # ------------------------------------------------------------------ training

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Loss on a batch of windows: obs (B, T, ...), action (B, T, A), action_is_pad (B, T)
        (True before the episode start). The memory starts empty at each window's first real
        frame; padded frames are not targets."""
        obs = self._obs(batch)
        action = batch["action"].float()  # (B, T, A) normalised
        if action.ndim == 2:  # n_obs_steps = 1 without delta indices: one frame
            action, obs = action[:, None], {k: v[:, None] for k, v in obs.items()}
        B, T, _ = action.shape
        pad = batch.get("action_is_pad")
        pad = torch.zeros(B, T, dtype=torch.bool, device=action.device) if pad is None else pad
        pad = pad.reshape(B, T).bool()
        real = ~pad  # (B, T)
        before = torch.cat([torch.ones_like(pad[:, :1]), pad[:, :-1]], dim=1)  # (B, T)
        reset = real & before  # the first real frame of each window
        feats, _ = self.net(obs, reset, random_crop=self.training)  # (B, T, F)
        params = self.net.head(feats)
        loss, parts = self.net.head.loss(params, action[:, :, None], real[:, :, None])
        return loss, {f"loss_{k}": v.item() for k, v in parts.items()}

    # ------------------------------------------------------------------ control

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], **kwargs: Any) -> Tensor:
        """One control step on obs (B, ...): (B, 1, A) normalised. Advances the memory."""
        self.eval()
        obs = self._obs(batch)
        B = next(iter(obs.values())).shape[0]
        if self._memory is None:
            self._memory = self.net.core.init_memory(B, device=next(self.parameters()).device)
        chunk, self._memory = self.net.step(obs, self._memory)  # (B, 1, A)
        return chunk

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor], **kwargs: Any) -> Tensor:
        """One control step: the normalised action (B, A) for LeRobot's postprocessor."""
        return self.predict_action_chunk(batch)[:, 0]
