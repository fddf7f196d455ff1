"""Memory introspection over a real PointCue episode: shapes, distributions, a plot."""

import gymnasium as gym
import numpy as np
import pytest

import envs
from eval.memory_plot import plot_trace, trace_episode
from ttm_policy import PolicyConfig, TTMConfig, TTMPolicy

STATS = {
    "obs/robot0_eef_pos/min": np.full(3, -0.3, np.float32),
    "obs/robot0_eef_pos/max": np.full(3, 0.3, np.float32),
    "action/min": -np.ones(7, np.float32),
    "action/max": np.ones(7, np.float32),
}


def tiny_policy(core: str = "ttm") -> TTMPolicy:
    cfg = PolicyConfig(
        obs_keys=("agentview_image", "robot0_eef_pos"),
        image_size=48,
        crop_size=44,
        dim=32,
        tokens_per_camera=4,
        conv_channels=(8, 8, 16, 16),
        ttm=TTMConfig(dim=32, memory_tokens=8, read_tokens=4, layers=1, heads=4, mlp_dim=64),
        core=core,
    )
    return TTMPolicy(cfg, STATS)


def test_trace_of_a_real_episode(tmp_path):
    env = gym.make(envs.task_id("PointCue"), max_steps=25)
    tr = trace_episode(tiny_policy(), env, seed=0, options={"cue": 1})
    T = len(tr["read"])
    assert T == 25  # an untrained policy wanders until the time limit
    M, R, N = 8, 4, 5  # 4 camera tokens + 1 low-dim token
    assert tr["read"].shape == (T, R, M + N) and tr["write"].shape == (T, M, M + R + N)
    assert tr["memory_norm"].shape == (T, M)
    np.testing.assert_allclose(tr["read"].sum(-1), 1, atol=1e-5)  # distributions over tokens
    np.testing.assert_allclose(tr["write"].sum(-1), 1, atol=1e-5)
    assert len(tr["input_labels"]) == N
    png = plot_trace(tr, tmp_path / "m.png", shade=(0, 5))
    assert png.stat().st_size > 20_000


def test_trace_needs_a_ttm_with_memory():
    env = gym.make(envs.task_id("PointCue"))
    with pytest.raises(ValueError, match="TTM core with memory"):
        trace_episode(tiny_policy("ttm-memoryless"), env, seed=0)
