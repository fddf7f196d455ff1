"""Memory tasks LiftCued / PlaceCued: the cue is seen, then gone from every observation."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.cued_tasks import LiftCuedEnv, LiftCuedExpert

CUED = ["LiftCued", "PlaceCued"]


def _rollout(env, seed, cue, actions):
    obs, _ = env.reset(seed=seed, options={"cue": cue})
    out = [obs]
    for a in actions:
        obs, *_ = env.step(a)
        out.append(obs)
    return out


@pytest.mark.parametrize("task", CUED)
def test_cue_is_gone_after_cue_steps(task):
    """Same scene seed, different cues, same actions: observations differ only in images and
    only while the cue is shown; afterwards every image and vector is byte-identical."""
    cue_steps, delay = 3, 2
    env = gym.make(envs.task_id(task), cue_steps=cue_steps, delay_steps=delay, image_size=32)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(9, 7))
    a = _rollout(env, 5, 0, actions)
    b = _rollout(env, 5, 1, actions)
    for t, (oa, ob) in enumerate(zip(a, b)):
        for key in oa:
            same = oa[key].dtype == ob[key].dtype and np.array_equal(oa[key], ob[key])
            if t >= cue_steps or not key.endswith("_image"):
                assert same, f"{task}: {key} differs between cues at observation {t}"
        if t < cue_steps:
            assert not np.array_equal(oa["agentview_image"], ob["agentview_image"]), (
                f"{task}: cue not visible in agentview at observation {t}"
            )
    # Held still during cue + delay despite random actions: the arm barely moves.
    eef = np.stack([o["robot0_eef_pos"] for o in a[: cue_steps + delay + 1]])
    assert np.abs(eef - eef[0]).max() < 0.005
    assert np.abs(a[-1]["robot0_eef_pos"] - a[0]["robot0_eef_pos"]).max() > 0.02  # then moves
    env.close()


def test_cue_drawn_from_seed_and_restored_from_state():
    env = LiftCuedEnv(cameras=())
    cues = []
    for seed in range(8):
        env.reset(seed=seed)
        cues.append(env.cue)
    assert set(cues) == {0, 1}
    env.reset(seed=3)
    assert env.cue == cues[3]
    env.reset(seed=1, options={"cue": 1})
    state = env.get_sim_state()
    assert state.shape == (1 + env.suite.sim.model.nq + env.suite.sim.model.nv + 1,)
    env.reset(seed=1, options={"cue": 0})
    env.set_sim_state(state)
    assert env.cue == 1
    with pytest.raises(ValueError, match="cue"):
        env.reset(seed=0, options={"cue": 2})
    env.close()


@pytest.mark.parametrize("task", CUED)
def test_expert_succeeds_for_both_cues(task):
    """The expert succeeds for either cue. While the env holds the arm still (cue + delay) it
    ignores the expert, whose labels there are the move it intends: the arm stays put, and on
    LiftCued the held labels differ between the two cues of one scene."""
    env = gym.make(envs.task_id(task), cameras=(), delay_steps=5)
    held = {}
    for cue in (0, 1):
        obs, _ = env.reset(seed=7, options={"cue": cue})
        expert = env.unwrapped.make_expert(noise=0.0, seed=cue)
        done, t, info, labels = False, 0, {}, []
        start = obs["robot0_eef_pos"].copy()
        while not done:
            action = expert.act(obs)
            if t < 10 + 5:
                labels.append(action)
            obs, _, terminated, truncated, info = env.step(action)
            if t < 10 + 5:  # the env ignored the label: the arm has not moved
                np.testing.assert_allclose(obs["robot0_eef_pos"], start, atol=2e-3)
            done, t = terminated or truncated, t + 1
        assert info["success"] and not info["failure"], f"{task} cue {cue}"
        held[cue] = np.array(labels)
    assert np.abs(held[0][:, :3]).max() > 0.1  # a move, not "hold still"
    if task == "LiftCued":  # it moves towards the cued cube (PlaceCued: to the one cube)
        assert np.abs(held[0][:, :3] - held[1][:, :3]).max() > 0.1
    env.close()


class _WrongCubeExpert(LiftCuedExpert):
    def grasp_target(self):
        from envs.experts import cube_grasp

        return cube_grasp(self, self.suite.cube_body_ids[1 - self.suite.cue])


def test_lifting_the_other_cube_fails():
    env = LiftCuedEnv(cameras=(), cue_steps=2)
    obs, _ = env.reset(seed=0, options={"cue": 0})
    expert = _WrongCubeExpert(env)
    done, info, terminated = False, {}, False
    while not done:
        obs, _, terminated, truncated, info = env.step(expert.act(obs))
        done = terminated or truncated
    assert terminated and info["failure"] and not info["success"]
    env.close()


@pytest.mark.slow
def test_collect_hdf5_round_trip(tmp_path):
    """ttm-collect writes 2 LiftCued demos; read back, re-create the env from env_args, reset
    to each stored states[0] (cue included), replay the actions: the stored observations are
    reproduced byte for byte and the demo succeeds. Rebuilding the scene from `model_file`
    first (robomimic's reset_to) also reproduces success; MuJoCo's XML writer rounds some
    model numbers, so there states agree to ~1e-5 and a few image pixels differ."""
    import h5py

    from envs.collect import Args, collect
    from envs.env_args import make_from_env_args
    from envs.hdf5 import demo_names, read_demo, read_env_args
    from envs.robosuite_tasks import load_model_xml

    out = tmp_path / "lift_cued.hdf5"
    summary = collect(
        Args(task="LiftCued", out=out, episodes=2, cameras=("agentview",), image_size=32)
    )
    assert summary["episodes_kept"] == 2
    with h5py.File(out) as f:
        env = make_from_env_args(read_env_args(f))
        task = env.unwrapped
        assert task.cameras == ("agentview",) and task.image_hw == (32, 32)
        for from_xml in (False, True):
            for name in demo_names(f):
                demo = read_demo(f, name)
                states, actions = demo["states"], demo["actions"]
                images = demo["obs"]["agentview_image"]
                env.reset(seed=123)  # any seed: the stored state decides
                if from_xml:
                    load_model_xml(env, demo["attrs"]["model_file"])
                task.set_sim_state(states[0])
                obs, success = task.get_obs(), False
                for t, a in enumerate(actions):
                    if from_xml:
                        np.testing.assert_allclose(task.get_sim_state(), states[t], atol=1e-4)
                        assert np.abs(obs["agentview_image"].astype(int) - images[t]).mean() < 2
                    else:
                        np.testing.assert_array_equal(task.get_sim_state(), states[t])
                        np.testing.assert_array_equal(obs["agentview_image"], images[t])
                    obs, _, _, _, info = env.step(a)
                    success |= info["success"]
                assert success, f"{name} (model_file: {from_xml}): replay did not succeed"
        env.close()


def test_place_expert_releases_anywhere_on_the_central_pad():
    """The PlaceCued expert draws its release point per episode (seeded), so its demonstrations
    open the gripper at several spots on the cued pad; every one of them succeeds."""
    env = gym.make(envs.task_id("PlaceCued"), cameras=(), delay_steps=2)
    finals = []
    for seed in range(4):
        obs, _ = env.reset(seed=3, options={"cue": 1})
        expert = env.unwrapped.make_expert(noise=0.0, seed=seed)
        done, info = False, {}
        while not done:
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            done = terminated or truncated
        assert info["success"], f"expert seed {seed}"
        suite = env.unwrapped.suite
        finals.append(suite.sim.data.body_xpos[suite.cube_body_id][:2].copy())
    offsets = np.array(finals) - suite.pad_centers()[1][:2]
    assert np.abs(offsets).max() < 0.045  # inside the pad (half side 5 cm)
    spread = max(np.linalg.norm(a - b) for a in finals for b in finals)
    assert spread > 0.01, f"release points {offsets} do not vary"
    env.close()
