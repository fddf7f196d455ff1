"""Memory introspection over a real PointCue episode: shapes, distributions, a plot."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from eval.memory_plot import item_memory_map, plot_items, plot_trace, trace_episode
from ttm_policy import PolicyConfig, TTMConfig, TTMPolicy

STATS = {
    "obs/robot0_eef_pos/min": np.full(3, -0.3, np.float32),
    "obs/robot0_eef_pos/max": np.full(3, 0.3, np.float32),
    "action/min": -np.ones(7, np.float32),
    "action/max": np.ones(7, np.float32),
}


def tiny_policy(core: str = "ttm", write_gate: bool = False, self_bias: float = 0.0) -> TTMPolicy:
    cfg = PolicyConfig(
        obs_keys=("agentview_image", "robot0_eef_pos"),
        image_size=48,
        crop_size=44,
        dim=32,
        tokens_per_camera=4,
        conv_channels=(8, 8, 16, 16),
        ttm=TTMConfig(
            dim=32,
            memory_tokens=8,
            read_tokens=4,
            layers=1,
            heads=4,
            mlp_dim=64,
            write_gate=write_gate,
            write_self_bias=self_bias,
        ),
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


def test_write_summary_tells_an_averaging_write_from_one_that_holds():
    """On a real PointCue episode: the official write (untrained) spreads each slot over
    every token, about 1/(M+R+N) on itself and M/(M+R+N) on old memory together; the
    copy-biased write (bias 8) keeps nearly all of each slot."""
    from eval.memory_plot import write_summary

    M, R, N = 8, 4, 5
    env = gym.make(envs.task_id("PointCue"), max_steps=20)
    torch.manual_seed(0)
    plain = write_summary(trace_episode(tiny_policy(), env, seed=0, options={"cue": 0}))
    held = write_summary(trace_episode(tiny_policy(self_bias=8.0), env, seed=0))
    assert len(plain["self_copy"]) == len(held["old_memory"]) == M
    assert np.mean(plain["self_copy"]) == pytest.approx(1 / (M + R + N), rel=0.5)
    assert np.mean(plain["old_memory"]) == pytest.approx(M / (M + R + N), rel=0.3)
    assert min(held["self_copy"]) > 0.9
    gated_policy = tiny_policy(write_gate=True)  # a gate forced to keep: the slot is held
    with torch.no_grad():
        gated_policy.core.write_gate.gate.bias.fill_(50.0)
    gated = write_summary(trace_episode(gated_policy, env, seed=0, options={"cue": 0}))
    assert min(gated["self_copy"]) > 0.99 and min(gated["old_memory"]) > 0.99


def test_trace_needs_a_ttm_with_memory():
    env = gym.make(envs.task_id("PointCue"))
    with pytest.raises(ValueError, match="TTM core with memory"):
        trace_episode(tiny_policy("ttm-memoryless"), env, seed=0)


def test_items_of_a_sequence_cue_episode_map_to_memory_slots(tmp_path):
    env = gym.make(envs.task_id("SequenceCue"), image_size=48)
    tr = trace_episode(tiny_policy(), env, seed=3, options={"cue": 7})
    seq = env.unwrapped.sequence_of(7)
    s = env.unwrapped.item_steps
    assert tr["cue_windows"] == [(i * s, (i + 1) * s, f"item {i} = {k}") for i, k in enumerate(seq)]
    assert tr["moving_from"] == env.unwrapped.cue_steps + env.unwrapped.delay_steps
    assert tr["progress"].shape == (len(tr["read"]),) and tr["progress"].min() >= 0
    maps = item_memory_map(tr)
    assert maps["written"].shape == maps["read"].shape == (3, 8)
    assert ((maps["written"] >= -1e-6) & (maps["written"] <= 1 + 1e-6)).all()
    # an untrained policy completes no item: it heads for item 0 while it moves, never later
    assert not np.isnan(maps["read"][0]).any() and np.isnan(maps["read"][1:]).all()
    png = plot_items(tr, tmp_path / "items.png")
    assert png.stat().st_size > 10_000


def test_item_memory_map_averages_over_each_items_steps():
    M, R, N, T = 2, 1, 1, 6
    write = np.zeros((T, M, M + R + N))
    write[:, :, 0] = 1.0  # every slot copies memory slot 0 ...
    write[1, 0] = [0.0, 0.0, 0.0, 1.0]  # ... except slot 0 at step 1, taken from the input
    read = np.zeros((T, R, M + N))
    read[:, 0, 1] = 1.0  # every read looks at memory slot 1 ...
    read[5, 0] = [0.5, 0.0, 0.5]  # ... except at step 5, half on slot 0, half on the input
    tr = {
        "segments": {"memory": M, "outputs": R, "inputs": N},
        "write": write,
        "read": read,
        "cue_windows": [(0, 2, "item 0"), (2, 3, "item 1")],
        "moving_from": 3,
        "progress": np.array([0, 0, 0, 0, 1, 1]),  # item 0 done at step 4
    }
    maps = item_memory_map(tr)
    np.testing.assert_allclose(maps["written"], [[0.5, 0.0], [0.0, 0.0]])
    # heading for item 0 at steps 3, 4; for item 1 at step 5 (one item done before it)
    np.testing.assert_allclose(maps["read"], [[0.0, 1.0], [0.5, 0.0]])


def test_cli_runs_the_checkpoints_env_for_each_cue(tmp_path):
    import json

    from eval.memory_plot import Args, make_env

    policy = tiny_policy()
    ckpt = tmp_path / "ckpt"
    policy.save_pretrained(ckpt)
    (ckpt / "env_args.json").write_text(
        json.dumps({"env_name": "ttm/SequenceCue-v0", "type": 2, "env_kwargs": {"delay_steps": 3}})
    )
    env = make_env(Args(checkpoint=ckpt))
    assert env.unwrapped.delay_steps == 3  # the checkpoint's env, not the task's defaults
    with pytest.raises(SystemExit, match="env_args.json: missing"):
        make_env(Args(checkpoint=tmp_path))


def test_cli_on_a_task_without_cues_runs_one_episode(tmp_path, monkeypatch, capsys):
    """Meta-World reach has no cue: one episode (no reset options, which such envs refuse),
    stopped at --max-steps, its plot `memory.png` and the write's summary in the JSON."""
    import json
    import sys
    from dataclasses import replace

    from eval.memory_plot import main

    pytest.importorskip("metaworld")
    base = tiny_policy()
    cfg = replace(
        base.cfg, obs_keys=("corner_image", "robot0_eef_pos"), image_size=64, crop_size=60,
        action_dim=4,
    )  # fmt: skip
    stats = {**STATS, "action/min": -np.ones(4, np.float32), "action/max": np.ones(4, np.float32)}
    ckpt = tmp_path / "ckpt"
    TTMPolicy(cfg, stats).save_pretrained(ckpt)
    out = tmp_path / "intro"
    monkeypatch.setattr(
        sys, "argv", ["memory_plot", "--checkpoint", str(ckpt), "--task", "MW-reach",
                      "--max-steps", "6", "--out", str(out)],
    )  # fmt: skip
    main()
    trace = json.loads((out / "memory_trace.json").read_text())
    assert list(trace) == ["episode"] and trace["episode"]["steps"] == 6
    assert len(trace["episode"]["write"]["self_copy"]) == 8
    assert (out / "memory.png").stat().st_size > 10_000
    assert "episode: 6 steps" in capsys.readouterr().out


def test_a_gated_write_counts_only_what_the_gate_lets_through():
    env = gym.make(envs.task_id("SequenceCue"), image_size=48)
    tr = trace_episode(tiny_policy(write_gate=True), env, seed=0, options={"cue": 0})
    keep = tr["keep"]
    assert keep.shape == tr["memory_norm"].shape and ((keep > 0) & (keep < 1)).all()
    ungated = item_memory_map({**tr, "keep": np.zeros_like(keep)})["written"]
    gated = item_memory_map(tr)["written"]
    for i, (t0, t1, _) in enumerate(tr["cue_windows"]):
        want = ((1 - tr["write"][t0:t1, :, :8].sum(-1)) * (1 - keep[t0:t1])).mean(0)
        np.testing.assert_allclose(gated[i], want, rtol=1e-6)
    assert (gated < ungated).all()
    ungated_trace = trace_episode(tiny_policy(), env, seed=0, options={"cue": 0})
    assert (ungated_trace["keep"] == 0).all()
