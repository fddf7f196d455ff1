"""robosuite tasks as gymnasium envs: real robosuite + MuJoCo, no mocks."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest

import envs
from envs.env_args import make_from_env_args
from envs.point_cue import PointCueEnv
from envs.robosuite_tasks import LiftEnv, RenderContext, load_model_xml, remap_asset_paths
from tests.conftest import ROBOMIMIC_FIXTURE as FIXTURE

LOW_DIM = {"robot0_eef_pos": (3,), "robot0_eef_quat": (4,), "robot0_gripper_qpos": (2,)}


@pytest.fixture(scope="module")
def lift84():
    env = gym.make("ttm/Lift-v0")  # default cameras, 84x84
    yield env
    env.close()


def test_observation_contract(lift84):
    obs, info = lift84.reset(seed=0)
    assert set(obs) == {"agentview_image", "robot0_eye_in_hand_image", *LOW_DIM, "object"}
    for cam in ("agentview", "robot0_eye_in_hand"):
        img = obs[f"{cam}_image"]
        assert img.shape == (84, 84, 3) and img.dtype == np.uint8 and img.flags["C_CONTIGUOUS"]
    for key, shape in LOW_DIM.items():
        assert obs[key].shape == shape and obs[key].dtype == np.float64
    assert obs["object"].shape == (10,)  # cube pos, quat, gripper-to-cube
    assert lift84.observation_space.contains(obs)
    assert lift84.action_space.shape == (7,)
    assert np.all(lift84.action_space.low == -1) and np.all(lift84.action_space.high == 1)
    obs, reward, terminated, truncated, info = lift84.step(np.zeros(7))
    assert lift84.observation_space.contains(obs)
    assert info["success"] is False and isinstance(reward, float)
    # Upright: the table (bright) fills the lower half of agentview, the dark robot base and
    # background sit in the upper part.
    img = obs["agentview_image"].astype(float)
    assert img[60:].mean() > img[:20].mean() + 20


def test_reset_seed_is_reproducible(lift84):
    a, _ = lift84.reset(seed=3)
    b, _ = lift84.reset(seed=3)
    c, _ = lift84.reset(seed=4)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not np.allclose(a["object"][:3], c["object"][:3])


def test_bad_action_is_rejected(lift84):
    lift84.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        lift84.step(np.zeros(6))


def test_env_args_round_trip():
    env = LiftEnv(cameras=("agentview",), image_size=32, horizon=50)
    args = json.loads(json.dumps(env.env_args()))  # as stored in a dataset
    assert args["env_name"] == "Lift" and args["type"] == 1
    assert args["env_kwargs"]["controller_configs"]["body_parts"]["right"]["type"] == "OSC_POSE"
    assert args["env_kwargs"]["camera_names"] == ["agentview"]
    env2 = make_from_env_args(json.dumps(args))
    assert env2.unwrapped.env_args() == args
    rng = np.random.default_rng(0)
    o1, _ = env.reset(seed=11)
    o2, _ = env2.reset(seed=11)
    for t in range(4):
        for k in o1:
            np.testing.assert_array_equal(o1[k], o2[k], err_msg=f"{k} at step {t}")
        a = rng.uniform(-1, 1, 7)
        o1, *_ = env.step(a)
        o2, *_ = env2.step(a)
    np.testing.assert_array_equal(env.unwrapped.get_sim_state(), env2.unwrapped.get_sim_state())
    env.close()
    env2.close()


def test_rollout_rebuilds_a_dataset_env_from_its_env_args():
    """`envs.rollout.rollout` (the Python API) takes a robosuite dataset's env_args."""
    from envs.rollout import rollout

    class Still:
        def reset(self):
            pass

        def select_action(self, obs):
            assert obs["agentview_image"].shape == (32, 32, 3)
            return np.zeros(7)

    env = LiftEnv(cameras=("agentview",), image_size=32, horizon=50)
    args = json.loads(json.dumps(env.env_args()))
    env.close()
    r = rollout(Still(), args, 1, max_steps=3)
    assert [(e["length"], e["outcome"]) for e in r["episodes"]] == [(3, "timeout")]


def test_remap_asset_paths():
    xml = (
        '<mesh file="/home/demo/robosuite/robosuite/models/assets/a/b.stl"/><texture builtin="x"/>'
    )
    out = remap_asset_paths(xml)
    import robosuite

    local = Path(robosuite.__file__).parent
    assert f'file="{local}/models/assets/a/b.stl"' in out and 'builtin="x"' in out


def test_unknown_env_name():
    with pytest.raises(ValueError, match="not a task here"):
        make_from_env_args({"env_name": "Wipe", "type": 1, "env_kwargs": {}})


def test_robomimic_fixture_observations_match():
    """The fixture's env (robomimic's env_args: full composite-controller config, cameras in
    env_kwargs, no render settings of ours), reset to a demo's model_file (asset paths of
    another machine) and states[0], observes what robomimic stored: low-dim exactly, upright
    images within a grey level, because a dataset from elsewhere renders with robosuite's
    quality, as its frames were; our fast rendering (asked for) is further off, the flipped
    frame far off."""
    errors = {}
    with h5py.File(FIXTURE) as f:
        for quality in ("default", "fast"):
            over = {} if quality == "default" else {"render_quality": "fast"}
            env = make_from_env_args(f["data"].attrs["env_args"], **over)
            task = env.unwrapped
            assert task.cameras == ("agentview", "robot0_eye_in_hand") and task.image_hw == (84, 84)
            assert task.render_quality == ("robosuite" if quality == "default" else "fast")
            demo = f["data/demo_2"]
            env.reset(seed=0)
            load_model_xml(env, demo.attrs["model_file"])
            task.set_sim_state(demo["states"][0])
            obs = task.get_obs()
            for key in (*LOW_DIM, "object"):
                np.testing.assert_allclose(obs[key], demo[f"obs/{key}"][0], atol=1e-9, err_msg=key)
            for cam in ("agentview", "robot0_eye_in_hand"):
                ref = demo[f"obs/{cam}_image"][0].astype(float)
                img = obs[f"{cam}_image"].astype(float)
                errors[quality, cam] = np.abs(img - ref).mean()
                assert np.abs(img[::-1] - ref).mean() > 25, cam
            env.close()
    for cam in ("agentview", "robot0_eye_in_hand"):
        assert errors["default", cam] < 1.0 < errors["fast", cam], (cam, errors)


@pytest.mark.slow
def test_robomimic_fixture_replays():
    """robomimic's replay convention: reset to model_file + states[0], replay the actions;
    states follow the stored ones (to 1e-6; measured: 1e-13) and every demo succeeds."""
    with h5py.File(FIXTURE) as f:
        env = make_from_env_args(f["data"].attrs["env_args"], cameras=())  # images off
        task = env.unwrapped
        for name in f["data"]:
            demo = f["data"][name]
            states, actions = demo["states"][:], demo["actions"][:]
            env.reset(seed=0)
            load_model_xml(env, demo.attrs["model_file"])
            task.set_sim_state(states[0])
            success = False
            for t, a in enumerate(actions):
                _, _, _, _, info = env.step(a)
                success |= info["success"]
                if t + 1 < len(states):  # state t+1 follows a_t
                    np.testing.assert_allclose(task.get_sim_state(), states[t + 1], atol=1e-6)
            assert success, f"{name}: replay did not reach success"
        env.close()


EXPERT_SEEDS = [
    ("Lift", [0, 1]),
    ("Stack", [0]),
    pytest.param("PickPlaceCan", [0], marks=pytest.mark.slow),
    pytest.param("NutAssemblySquare", [0], marks=pytest.mark.slow),
    pytest.param("Door", [0], marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("task", "seeds"), EXPERT_SEEDS)
def test_expert_succeeds(task, seeds):
    env = gym.make(envs.task_id(task), cameras=())
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        expert = env.unwrapped.make_expert(noise=0.0, seed=seed)
        done, info = False, {}
        while not done:
            action = expert.act(obs)
            assert action.shape == (7,) and np.all(np.abs(action) <= 1)
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        assert info["success"], f"{task} expert failed on seed {seed}"
    env.close()


def test_unknown_camera_is_named():
    with pytest.raises(ValueError, match="no camera 'nope'"):
        LiftEnv(cameras=("agentview", "nope"))


def test_closing_one_env_leaves_others_rendering():
    """robosuite frees GL objects in whichever EGL context is current; the wrapper makes its
    own current first, so closing env B must not change what env A renders."""
    a = LiftEnv(cameras=("agentview",), image_size=32)
    before, _ = a.reset(seed=0)
    b = LiftEnv(cameras=("agentview",), image_size=32)
    b.reset(seed=1)
    b.close()
    after, _ = a.reset(seed=0)
    np.testing.assert_array_equal(before["agentview_image"], after["agentview_image"])
    a.close()


def test_garbage_collected_envs_leave_others_rendering():
    """An env that is never closed, or one whose constructor raised after robosuite made its
    render context, is freed by the cyclic garbage collector at some later moment, usually
    while another env's GL context is current. That must not touch the other env's GL objects
    (it used to delete them: wrong images from then on)."""
    gc.disable()  # collect exactly where the test says
    try:
        a = LiftEnv(cameras=("agentview",), image_size=32)
        before, _ = a.reset(seed=0)
        with pytest.raises(ValueError, match="no camera"):
            LiftEnv(cameras=("agentview", "nope"), image_size=32)  # half-built, then dropped
        LiftEnv(cameras=("agentview",), image_size=32).reset(seed=1)  # never closed
        leaked = PointCueEnv(image_size=16)
        leaked.reset(seed=0)
        leaked.cycle = leaked  # only the cyclic collector frees it
        del leaked
        a.unwrapped._make_gl_current()
        assert gc.collect() > 0
        after, _ = a.reset(seed=0)
        np.testing.assert_array_equal(before["agentview_image"], after["agentview_image"])
        a.close()
    finally:
        gc.enable()


def test_close_frees_the_render_context_and_is_idempotent():
    env = LiftEnv(cameras=("agentview",), image_size=16)
    env.reset(seed=0)
    ctx = env.suite.sim._render_context_offscreen
    assert isinstance(ctx, RenderContext)
    env.close()
    assert "gl_ctx" not in vars(ctx) and "con" not in vars(ctx)  # freed now, not by the GC
    env.close()
