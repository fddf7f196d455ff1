"""PointCue: observation contract, expert, cue invisibility, reproducibility, state round trip."""

import ctypes
import os

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import envs  # noqa: F401  (registers ttm/* ids)
from envs.env_args import make_from_env_args
from envs.point_cue import GOALS, STATE_SIZE, PointCueEnv


@pytest.fixture(scope="module")
def env():
    env = gym.make("ttm/PointCue-v0")
    yield env
    env.close()


def run_expert(env, seed, cue=None, noise=0.05):
    """Expert episode (the cue drawn from the seed when None); returns (observations incl. the
    last, actions, final info). Also used by the other cued tasks' tests."""
    obs, info = env.reset(seed=seed, options=None if cue is None else {"cue": cue})
    expert = env.unwrapped.make_expert(noise=noise, seed=seed)
    observations, actions = [obs], []
    done = False
    while not done:
        action = expert.act(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        actions.append(action)
        done = terminated or truncated
    return observations, actions, info


def assert_obs_equal(a, b, where=""):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), f"{where} obs[{k!r}] differ"


def test_observation_keys_shapes_dtypes(env):
    obs, info = env.reset(seed=0)
    assert set(obs) == {"agentview_image", "robot0_eef_pos"}
    assert obs["agentview_image"].shape == (48, 48, 3) and obs["agentview_image"].dtype == np.uint8
    assert obs["robot0_eef_pos"].shape == (3,) and obs["robot0_eef_pos"].dtype == np.float64
    assert env.observation_space.contains(obs)
    assert env.action_space.shape == (7,)
    assert info["success"] is False
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs) and isinstance(info["success"], bool)

    small = gym.make("ttm/PointCue-v0", image_size=32)
    assert small.reset(seed=0)[0]["agentview_image"].shape == (32, 32, 3)
    small.close()
    lowdim = gym.make("ttm/PointCue-v0", render_images=False)
    assert set(lowdim.reset(seed=0)[0]) == {"robot0_eef_pos"}
    lowdim.close()


def test_image_is_upright_and_cue_marks_the_target_pad(env):
    # Pads are at y = +0.25 (upper half), pad 0 at x = -0.25 (left), pad 1 at x = +0.25 (right).
    for cue, (lo, hi) in [(0, (0, 24)), (1, (24, 48))]:
        img = env.reset(seed=0, options={"cue": cue})[0]["agentview_image"].astype(int)
        red = (img[..., 0] > 150) & (img[..., 1] < 80)  # (48, 48) cue-coloured pixels
        rows, cols = np.nonzero(red)
        assert len(rows) > 4, "no cue pixels in the first frame"
        assert rows.max() < 24 and cols.min() >= lo and cols.max() < hi


@pytest.mark.parametrize("cue", [0, 1])
def test_expert_succeeds(env, cue):
    for seed in range(4):
        observations, actions, info = run_expert(env, seed, cue)
        assert info["success"] and info["reached"] == cue, f"seed {seed} cue {cue}: {info}"
        assert len(actions) < env.unwrapped.max_steps
        # While held (cue + delay) the expert already commands its move towards the cued pad.
        held = env.unwrapped.cue_steps + env.unwrapped.delay_steps
        towards = np.sign(GOALS[cue][0] - observations[0]["robot0_eef_pos"][0])
        assert np.all(np.sign(np.asarray(actions[:held])[:, 0]) == towards)


def test_cue_is_invisible_after_the_cue_steps(env):
    """Same seed, different cues, same actions: every observation after the cue is identical."""
    u = env.unwrapped
    seed = 11
    observations0, actions, info0 = run_expert(env, seed, cue=0)
    assert info0["success"]
    obs, _ = env.reset(seed=seed, options={"cue": 1})
    observations1 = [obs]
    for action in actions:
        obs, reward, terminated, truncated, info1 = env.step(action)
        observations1.append(obs)
    # Driven to pad 0 with cue 1: the episode ends at the same step, as a failure.
    assert terminated and not info1["success"] and info1["reached"] == 0
    assert len(observations0) == len(observations1) > u.cue_steps + u.delay_steps
    for t, (o0, o1) in enumerate(zip(observations0, observations1)):
        if t < u.cue_steps:
            assert not np.array_equal(o0["agentview_image"], o1["agentview_image"]), f"step {t}"
            np.testing.assert_array_equal(o0["robot0_eef_pos"], o1["robot0_eef_pos"])
        else:
            assert_obs_equal(o0, o1, where=f"step {t}")


def test_agent_is_held_still_during_cue_and_delay(env):
    u = env.unwrapped
    obs, _ = env.reset(seed=3)
    start = obs["robot0_eef_pos"].copy()
    for _ in range(u.cue_steps + u.delay_steps):
        obs, *_ = env.step(np.ones(7))
        np.testing.assert_array_equal(obs["robot0_eef_pos"], start)
    obs, *_ = env.step(np.ones(7))
    assert np.all(obs["robot0_eef_pos"][:2] > start[:2])  # +x +y: the action now moves it


def test_reset_is_reproducible_and_cue_comes_from_the_seed(env):
    a = env.reset(seed=7)
    b = env.reset(seed=7)
    assert_obs_equal(a[0], b[0])
    assert a[1]["cue"] == b[1]["cue"]
    c = env.reset(seed=8)[0]
    assert not np.array_equal(a[0]["robot0_eef_pos"], c["robot0_eef_pos"])
    cues = {env.reset(seed=s)[1]["cue"] for s in range(20)}
    assert cues == {0, 1}
    # Forcing the cue does not change the scene (the start position) the seed gives.
    forced = env.reset(seed=7, options={"cue": 1 - a[1]["cue"]})[0]
    np.testing.assert_array_equal(forced["robot0_eef_pos"], a[0]["robot0_eef_pos"])


def test_sim_state_round_trip(env):
    u = env.unwrapped
    rng = np.random.default_rng(0)
    env.reset(seed=5, options={"cue": 1})
    actions = rng.uniform(-0.3, 0.3, (30, 7))
    for t, action in enumerate(actions):
        if t == 3:  # still inside the cue: the state must carry the cue and step counter
            saved, saved_obs = u.get_sim_state(), u.get_obs()
            after = [env.step(a)[0] for a in actions[t:]]
            break
        env.step(action)
    assert saved.shape == (STATE_SIZE,) and saved.dtype == np.float64
    env.reset(seed=99, options={"cue": 0})  # a different scene and cue
    u.set_sim_state(saved)
    assert_obs_equal(u.get_obs(), saved_obs)
    for t, action in enumerate(actions[3:]):
        assert_obs_equal(env.step(action)[0], after[t], where=f"replay step {t}")
    with pytest.raises(ValueError, match=r"shape \(7,\)"):
        u.set_sim_state(np.zeros(5))


def test_env_args_and_model_xml_recreate_the_env(env):
    u = env.unwrapped
    args = u.env_args()
    assert args["env_name"] == "ttm/PointCue-v0" and args["type"] == 2
    other = make_from_env_args(args)
    assert_obs_equal(other.reset(seed=4)[0], env.reset(seed=4)[0])
    other.close()
    mujoco.MjModel.from_xml_string(u.model_xml())  # the stored MJCF compiles on its own


def test_bad_kwargs_name_the_problem():
    with pytest.raises(ValueError, match="robot0_eye_in_hand"):
        PointCueEnv(cameras=("robot0_eye_in_hand",))
    with pytest.raises(ValueError, match="max_steps"):
        PointCueEnv(max_steps=10)
    e = PointCueEnv(render_images=False)
    e.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(7,\)"):
        e.step(np.zeros(2))
    with pytest.raises(ValueError, match="cue"):
        e.reset(seed=0, options={"cue": 2})


@pytest.mark.skipif(os.environ.get("MUJOCO_GL") != "egl", reason="checks the EGL binding")
def test_closing_a_renderer_keeps_the_current_context():
    """Closing one env's renderer frees its GL objects in its own context and leaves the
    context that was current (another env's) current, untouched: mujoco.Renderer.close freed
    in whichever context was current and then unbound it."""
    from mujoco.egl import egl_ext

    a, b = PointCueEnv(), PointCueEnv()
    img_a = a.reset(seed=0)[0]["agentview_image"]
    b.reset(seed=1)
    a._renderer._gl_context.make_current()
    ctx_a = ctypes.cast(egl_ext.eglGetCurrentContext(), ctypes.c_void_p).value
    b.close()
    b.close()  # idempotent
    assert ctypes.cast(egl_ext.eglGetCurrentContext(), ctypes.c_void_p).value == ctx_a
    assert np.array_equal(a.reset(seed=0)[0]["agentview_image"], img_a)
    a.close()
