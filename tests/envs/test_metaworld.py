"""Meta-World tasks (`envs/metaworld_tasks.py`): real Meta-World v3 envs, its scripted
policies, real rendering and a real ttm-collect file."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import h5py
import mujoco
import numpy as np
import pytest

import envs
from envs import registry
from envs.collect import Args, collect, episode_seed
from envs.env_args import make_from_env_args
from envs.hdf5 import demo_names, read_demo, read_env_args
from envs.metaworld_tasks import benchmark_layouts, import_metaworld

ROOT = Path(__file__).resolve().parents[2]
LOW_DIM = {"robot0_eef_pos": (3,), "robot0_gripper_qpos": (2,), "object": (39,)}


def _make(task: str, **kwargs) -> gym.Env:
    return gym.make(envs.task_id(f"MW-{task}"), **kwargs)


def _layout(env: gym.Env) -> np.ndarray:
    return env.unwrapped.get_sim_state()[-env.unwrapped._layout_size :]


def test_the_registry_lists_every_metaworld_task_and_mt10_first():
    mw = import_metaworld()
    assert {f"{t}-v3" for t in registry.METAWORLD_TASKS} == set(mw.env_dict.ALL_V3_ENVIRONMENTS)
    assert [f"{t}-v3" for t in registry.METAWORLD_MT10] == list(mw.env_dict.MT10_V3)
    assert {f"{t}-v3" for t in registry.METAWORLD_TASKS} <= set(mw.policies.ENV_POLICY_MAP)
    spec = envs.task_spec("MW-pick-place")
    assert envs.task_id("MW-pick-place") == "ttm/MW-pick-place-v0"
    assert (spec.recipe.episodes, spec.recipe.image_size) == (100, 64)
    assert spec.recipe.cameras == ("corner", "behindGripper")


@pytest.mark.parametrize("task", registry.METAWORLD_MT10)
def test_each_mt10_task_makes_resets_and_steps(task):
    """No images: the low-dim observation, Meta-World's 39-D state with the goal in it, the
    4-D action, and a policy's default keys (no privileged `object`)."""
    env = _make(task, cameras=())
    obs, info = env.reset(seed=0)
    assert {k: v.shape for k, v in obs.items()} == LOW_DIM and info == {"success": False}
    assert obs.keys() == env.observation_space.spaces.keys()
    assert env.action_space.shape == (4,)
    state = obs["object"]
    np.testing.assert_array_equal(state[:3], obs["robot0_eef_pos"])  # the hand
    assert 0.0 <= state[3] <= 1.0  # finger opening, normalised
    np.testing.assert_array_equal(state[18:36], state[:18])  # stacked: the same at reset
    np.testing.assert_array_equal(state[36:], env.unwrapped.mw._target_pos)  # goal, visible
    obs, reward, terminated, truncated, info = env.step(np.array([0.0, 0.0, 0.0, 2.0]))  # clipped
    assert set(info) == {"success"} and reward == float(info["success"])
    assert not truncated and env.unwrapped.horizon == 500
    with pytest.raises(ValueError, match=r"expected \(4,\)"):
        env.step(np.zeros(7))
    env.close()


def test_a_seed_is_one_layout_whatever_ran_before():
    env = _make("pick-place", image_size=24)
    first, _ = env.reset(seed=11)
    layout = _layout(env)
    other, _ = env.reset(seed=12)
    assert not np.array_equal(_layout(env), layout)
    assert not np.array_equal(other["object"], first["object"])
    env.step(np.ones(4))
    again, _ = env.reset(seed=11)
    np.testing.assert_array_equal(_layout(env), layout)
    for key in first:
        np.testing.assert_array_equal(again[key], first[key], err_msg=key)
    # A second env (another worker, another policy's evaluation): the same episode.
    twin = _make("pick-place", image_size=24)
    np.testing.assert_array_equal(twin.reset(seed=11)[0]["corner_image"], first["corner_image"])
    twin.close()
    env.close()


def test_mt1_layouts_are_the_benchmarks_fifty():
    env = _make("reach", cameras=(), layouts="mt1")
    tasks = benchmark_layouts("reach")
    for seed in (3, 53):  # 53 % 50 == 3
        env.reset(seed=seed)
        np.testing.assert_array_equal(_layout(env), pickle.loads(tasks[3].data)["rand_vec"])
    env.reset(seed=4)
    assert not np.array_equal(_layout(env), pickle.loads(tasks[3].data)["rand_vec"])
    env.close()


def _green_centroid(image: np.ndarray) -> np.ndarray:
    img = image.astype(int)
    mask = (img[..., 1] > 150) & (img[..., 0] < 90) & (img[..., 2] < 90)
    assert mask.sum() >= 2, "the green object is not in view"
    return np.argwhere(mask).mean(0)  # (row, col)


@pytest.mark.parametrize("camera", ["corner", "behindGripper", "corner2", "corner3", "corner4"])
def test_images_are_upright_and_not_mirrored(camera):
    """Lifting the (painted green) object moves it up in the image; moving it to the viewer's
    right (view direction x world up) moves it right. An upside-down frame fails the first, a
    mirrored one the second."""
    env = _make("pick-place", cameras=(camera,), image_size=96)
    u = env.unwrapped
    model, data = u.mw.model, u.mw.data
    for g in np.flatnonzero(model.geom_bodyid == model.body("obj").id):
        model.geom_rgba[g], model.geom_matid[g] = (0, 1, 0, 1), -1
    obs, _ = env.reset(seed=0)
    start = _green_centroid(obs[f"{camera}_image"])
    forward = -data.cam(camera).xmat.reshape(3, 3)[:, 2]
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    adr = model.joint("objjoint").qposadr[0]
    qpos = data.qpos.copy()
    for move, axis, sign in (((0, 0, 0.1), 0, -1), (0.08 * right, 1, +1)):
        data.qpos[:] = qpos
        data.qpos[adr : adr + 3] += move
        mujoco.mj_forward(model, data)
        moved = _green_centroid(u.get_obs()[f"{camera}_image"])
        shift = (moved - start)[axis]
        assert sign * shift > 2, (camera, "up" if axis == 0 else "right", shift)
    env.close()


@pytest.mark.parametrize("task", ["reach", "pick-place", "drawer-open"])
def test_the_expert_succeeds_on_seeded_episodes(task):
    env = _make(task, cameras=())
    for i in range(3):
        seed = episode_seed(0, i)
        obs, _ = env.reset(seed=seed)
        expert, done = env.unwrapped.make_expert(noise=0.05, seed=seed), False
        while not done:
            action = expert.act(obs)
            assert action.shape == (4,) and np.abs(action).max() <= 1.0
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        assert info["success"] and terminated and not truncated, (task, i)
        assert env.unwrapped._t < 200  # 40-90 steps measured; the limit is 500
    env.close()


def test_a_state_round_trip_restores_the_episode_and_its_layout():
    env = _make("drawer-open", image_size=24)  # the layout moves a model body (the drawer)
    u = env.unwrapped
    obs, _ = env.reset(seed=7)
    expert = u.make_expert(seed=0)
    for _ in range(30):
        obs, *_ = env.step(expert.act(obs))
    state, saved = u.get_sim_state(), obs
    actions = [expert.act(obs)]
    after, *_ = env.step(actions[0])
    drawer = u.mw.model.body("drawer").pos.copy()
    env.reset(seed=8)  # another layout: the drawer stands elsewhere
    assert not np.array_equal(u.mw.model.body("drawer").pos, drawer)
    u.set_sim_state(state)
    np.testing.assert_array_equal(u.mw.model.body("drawer").pos, drawer)
    restored = u.get_obs()
    for key in saved:
        np.testing.assert_array_equal(restored[key], saved[key], err_msg=key)
    np.testing.assert_array_equal(u.get_sim_state(), state)
    again, *_ = env.step(actions[0])  # the same next step (up to solver warm-start)
    np.testing.assert_allclose(again["object"], after["object"], atol=1e-9)
    with pytest.raises(ValueError, match="state must have shape"):
        u.set_sim_state(state[:-1])
    # model_xml: the scene as it is now, loadable, with the layout's body positions.
    model = mujoco.MjModel.from_xml_string(u.model_xml())
    np.testing.assert_allclose(model.body("drawer").pos, drawer, atol=1e-6)  # 7 digits
    env.close()


def test_the_lerobot_view_is_lerobots_camera_and_state_resized_as_the_plugin_does():
    """view="lerobot": what LeRobot 0.4.4's MetaworldEnv gives the TTM plugin (corner2 moved,
    480 px with Meta-World's render settings, area-resized by the plugin's function;
    agent_pos = the observation's first 4 values), re-made from env_args by ttm-eval."""
    import torch

    from envs.metaworld_tasks import LEROBOT_CAMERA_POS
    from ttm_policy.lerobot_checkpoint import area_resize

    full = _make("drawer-close", view="lerobot", image_size=480)
    small = _make("drawer-close", view="lerobot", image_size=48)
    a, _ = full.reset(seed=3)
    b, _ = small.reset(seed=3)
    assert set(b) == {"corner2_image", "agent_pos", *LOW_DIM}
    assert a["corner2_image"].shape == (480, 480, 3) and b["corner2_image"].shape == (48, 48, 3)
    x = torch.from_numpy(a["corner2_image"]).permute(2, 0, 1).float()[None] / 255
    np.testing.assert_array_equal(b["corner2_image"], area_resize(x, 48)[0].numpy())
    np.testing.assert_array_equal(b["agent_pos"], b["object"][:4])
    u = small.unwrapped
    np.testing.assert_allclose(
        u.mw.model.cam_pos[u.mw.model.camera("corner2").id], LEROBOT_CAMERA_POS
    )
    assert u.render_quality == "metaworld" and u.cameras == ("corner2",)
    # The default view's corner2 is another picture (the camera where Meta-World puts it).
    plain = _make("drawer-close", cameras=("corner2",), image_size=48, render_quality="metaworld")
    c, _ = plain.reset(seed=3)
    assert "agent_pos" not in c
    assert np.abs(c["corner2_image"].astype(int) - b["corner2_image"].astype(int)).mean() > 5
    env_args = u.env_args()
    assert env_args["env_kwargs"]["view"] == "lerobot"
    assert "view" not in plain.unwrapped.env_args()["env_kwargs"]  # old env_args stay as they were
    again = make_from_env_args(env_args)
    d, _ = again.reset(seed=3)
    for key in b:
        np.testing.assert_array_equal(d[key], b[key], err_msg=key)
    with pytest.raises(ValueError, match="one camera, corner2"):
        _make("drawer-close", view="lerobot", cameras=("corner",))
    with pytest.raises(ValueError, match="render_quality='metaworld'"):
        _make("drawer-close", view="lerobot", render_quality="fast")
    with pytest.raises(ValueError, match="view="):
        _make("drawer-close", view="robomimic")
    for env in (full, small, plain, again):
        env.close()


@pytest.fixture(scope="module")
def reach_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("mw") / "mw_reach.hdf5"
    summary = collect(Args(task="MW-reach", out=out, episodes=2, seed=3))
    return out, summary


def test_collect_writes_4d_actions_and_env_args_that_remake_the_env(reach_dataset):
    out, summary = reach_dataset
    assert summary["episodes_kept"] == 2 and summary["expert_success_rate"] == 1.0
    with h5py.File(out) as f:
        env_args = read_env_args(f)
        demo = read_demo(f, demo_names(f)[0])
    n = demo["attrs"]["num_samples"]
    assert demo["actions"].shape == (n, 4) and np.abs(demo["actions"]).max() <= 1.0
    assert demo["obs"]["corner_image"].shape == (n, 64, 64, 3)
    assert demo["obs"]["behindGripper_image"].dtype == np.uint8
    assert demo["obs"]["robot0_gripper_qpos"].shape == (n, 2)
    assert "<mujoco" in demo["attrs"]["model_file"]
    assert env_args["type"] == 2 and env_args["env_name"] == "ttm/MW-reach-v0"
    assert env_args["env_kwargs"]["render_quality"] == "fast"
    env = make_from_env_args(env_args)
    first, _ = env.reset(seed=int(demo["attrs"]["seed"]))  # the demo's episode, again
    for key, value in first.items():
        np.testing.assert_array_equal(value, demo["obs"][key][0], err_msg=key)
    k = n // 2
    env.unwrapped.set_sim_state(demo["states"][k])  # replay from the file
    mid = env.unwrapped.get_obs()
    for key, value in mid.items():
        np.testing.assert_array_equal(value, demo["obs"][key][k], err_msg=key)
    env.close()


def test_without_metaworld_envs_imports_and_making_says_how_to_install():
    code = (
        "import sys; sys.modules['metaworld'] = None\n"  # import metaworld raises ImportError
        "import gymnasium as gym, envs\n"
        "assert 'ttm/MW-reach-v0' in gym.registry\n"
        "import envs.metaworld_tasks\n"
        "try:\n"
        "    gym.make('ttm/MW-reach-v0')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert "scripts/setup.sh" in r.stdout and "--no-deps metaworld==3.1.1" in r.stdout


def test_a_4d_policy_trains_on_the_file_and_ttm_eval_remakes_the_env(reach_dataset, tmp_path):
    """ttm-train then ttm-eval end to end (2 steps, 2 episodes capped at 20 steps, ~10 s): the
    policy's action width comes from the file, and the eval env from its env_args."""
    out, _ = reach_dataset
    run = tmp_path / "run"
    bin_dir = Path(sys.executable).parent  # console scripts made from pyproject at install
    train = [bin_dir / "ttm-train", "--dataset", out, "--steps", "2", "--batch-size", "2"]
    train += ["--threads", "1", "--out", run]
    r = subprocess.run(train, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    config = json.loads((run / "checkpoints/last/config.json").read_text())["policy"]
    assert config["action_dim"] == 4
    assert config["obs_keys"] == [
        "behindGripper_image",
        "corner_image",
        "robot0_eef_pos",
        "robot0_gripper_qpos",
    ]  # the trainer's defaults: no privileged `object`
    evaluate = [bin_dir / "ttm-eval", "--checkpoint", run / "checkpoints/last", "--episodes", "2"]
    r = subprocess.run(
        evaluate + ["--max-steps", "20"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads((run / "eval/last/eval.json").read_text())
    assert result["env"] == "ttm/MW-reach-v0" and result["lengths"] == [20, 20]
    assert result["env_kwargs"]["cameras"] == ["corner", "behindGripper"]


def test_the_mt10_script_runs_the_ten_tasks_by_default():
    """scripts/mt10.sh's task list when TASKS is unset: the line the script runs, run alone
    (the whole script trains 30 cells)."""
    (line,) = [
        s for s in (ROOT / "scripts/mt10.sh").read_text().splitlines() if s.startswith("TASKS=")
    ]
    bin_dir = Path(sys.executable).parent
    r = subprocess.run(
        ["bash", "-c", f'BIN="{bin_dir}"; unset TASKS; {line}; echo "$TASKS"'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == list(registry.METAWORLD_MT10)
