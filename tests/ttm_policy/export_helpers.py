"""Shared by test_export.py and test_runtime.py: a real PointCue episode and tiny policies.

The episode is recorded from the real env (`ttm/PointCue-v0`, 32 px camera): the point is
held through the cue and the delay, then circles around its start (never reaching a pad, so
one episode lasts the 200 steps); its observations are streamed through both PyTorch and
ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

import envs  # noqa: F401 - registers ttm/PointCue-v0
from ttm_policy import (
    CausalTransformerConfig,
    GRUConfig,
    LSTMConfig,
    PolicyConfig,
    TTMConfig,
    TTMPolicy,
)
from ttm_policy.export import export

CORES = ["ttm", "ttm-memoryless", "lstm", "transformer", "none", "gru"]
KEYS = ("agentview_image", "robot0_eef_pos")
SIZE = 32  # camera side; the policy crops to 28
STEPS = 200


def record_point_cue(steps: int = STEPS, seed: int = 0) -> tuple[list[dict], np.ndarray]:
    """Observations (dicts as the env gives them) and the actions sent, one episode."""
    env = gym.make("ttm/PointCue-v0", image_size=SIZE, max_steps=steps + 10)
    obs, _ = env.reset(seed=seed)
    observations, actions = [], []
    for t in range(steps):
        phase = 2 * np.pi * t / 40
        a = np.zeros(7, np.float32)
        a[:2] = 0.45 * np.array([-np.sin(phase), np.cos(phase)])  # a 15 cm circle, 2 s a lap
        a[6] = np.sign(np.sin(phase / 3))
        observations.append(obs)
        actions.append(a)
        obs, _, terminated, truncated, _ = env.step(a)
        assert not (terminated or truncated), f"episode ended at step {t}"
    env.close()
    return observations, np.stack(actions)


def stats_from(observations: list[dict], actions: np.ndarray) -> dict[str, np.ndarray]:
    """Normalisation stats as train.data.compute_stats names them."""
    pos = np.stack([o["robot0_eef_pos"] for o in observations])
    return {
        "obs/robot0_eef_pos/min": pos.min(0),
        "obs/robot0_eef_pos/max": pos.max(0),
        "action/min": actions.min(0),
        "action/max": actions.max(0),
    }


def tiny_policy(core: str, stats: dict, **overrides) -> TTMPolicy:
    """Width 32, one layer, 32 px images; the TTM starts from a learned (non-zero) memory."""
    cfg = PolicyConfig(
        obs_keys=KEYS,
        image_size=SIZE,
        crop_size=28,
        dim=32,
        tokens_per_camera=4,
        conv_channels=(8, 8, 16, 16),
        core=core,
        ttm=TTMConfig(
            memory_tokens=8, read_tokens=4, layers=1, heads=4, mlp_dim=64, memory_init="learned"
        ),
        lstm=LSTMConfig(hidden=32, layers=1),
        gru=GRUConfig(hidden=32),
        transformer=CausalTransformerConfig(layers=1, heads=4, mlp_dim=64, window=4),
        head_hidden=32,
        **overrides,
    )
    policy = TTMPolicy(cfg, stats).eval()
    if core == "ttm":  # a memory init far from zero, so it matters
        policy.core.memory_init.data.normal_()
    return policy


def export_tiny(root: Path, policy: TTMPolicy, name: str, fmt: str = "onnx") -> Path:
    """Save `policy` as a checkpoint under root/ckpt-<name> and export it to root/<name>."""
    policy.save_pretrained(root / f"ckpt-{name}")
    export(root / f"ckpt-{name}", root / name, fmt)
    return root / name
