"""SequenceCue: cue encoding, schedule, cue invisibility, visiting order, expert, collection."""

import math

import gymnasium as gym
import h5py
import mujoco
import numpy as np
import pytest

import envs
from envs.collect import Args, collect, episode_jobs
from envs.env_args import make_from_env_args
from envs.hdf5 import demo_names, read_demo, read_env_args
from envs.point_cue import CONTROL_DT, MAX_SPEED
from envs.sequence_cue import STATE_SIZE, SequenceCueEnv, SequenceCueExpert
from tests.envs.test_collect import replay as replay_demo
from tests.envs.test_point_cue import assert_obs_equal, run_expert

HALF_VIEW = 1.2 * math.tan(math.radians(45 / 2))  # m seen from the image centre to its edge


@pytest.fixture(scope="module")
def env():
    env = gym.make(envs.task_id("SequenceCue"))
    yield env
    env.close()


def replay(env, seed, cue, actions):
    """Reset to (seed, cue) and take `actions` until the episode ends; (observations, info)."""
    obs, info = env.reset(seed=seed, options={"cue": cue})
    observations = [obs]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        if terminated or truncated:
            break
    return observations, info


def hold(env):
    """Step through the cue and the delay with zero actions."""
    u = env.unwrapped
    for _ in range(u.cue_steps + u.delay_steps):
        *_, terminated, truncated, info = env.step(np.zeros(7))
        assert not (terminated or truncated) and info["reached"] == -1


def drive_to(env, pad, limit=30):
    """Steer straight to `pad` until the point is in it or the episode ends; the last step's
    (terminated, info)."""
    u = env.unwrapped
    for _ in range(limit):
        v = 0.8 * (u.goals[pad] - u.data.qpos[:2]) / (MAX_SPEED * CONTROL_DT)
        action = np.zeros(7)
        action[:2] = v / max(1.0, float(np.linalg.norm(v)))
        *_, terminated, truncated, info = env.step(action)
        if info["reached"] == pad or terminated or truncated:
            return terminated, info
    raise AssertionError(f"pad {pad} not reached in {limit} steps")


def test_observations_and_cue_encoding(env):
    u = env.unwrapped
    obs, info = env.reset(seed=0)
    assert set(obs) == {"agentview_image", "robot0_eef_pos"}
    assert obs["agentview_image"].shape == (32, 32, 3) and obs["agentview_image"].dtype == np.uint8
    assert obs["robot0_eef_pos"].shape == (3,) and obs["robot0_eef_pos"].dtype == np.float64
    assert env.observation_space.contains(obs) and env.action_space.shape == (7,)
    assert info["success"] is False and info["sequence"] == u.sequence_of(info["cue"])
    # Default sizes: 6 pads, 3 items -> 6 * 5 * 4 ordered sequences, indexed lexicographically.
    assert SequenceCueEnv.cues == u.cues == 120 and (u.n_goals, u.n_items) == (6, 3)
    assert u.sequence_of(0) == (0, 1, 2) and u.sequence_of(1) == (0, 1, 3)
    assert u.sequence_of(119) == (5, 4, 3)
    assert len({u.sequence_of(c) for c in range(u.cues)}) == 120
    assert all(u.cue_of(u.sequence_of(c)) == c for c in range(0, 120, 7))
    # Pads are well separated, all at the same distance from the centre where the point starts.
    gaps = np.linalg.norm(u.goals[:, None] - u.goals[None], axis=-1)[~np.eye(6, dtype=bool)]
    assert gaps.min() > 0.25
    np.testing.assert_allclose(np.linalg.norm(u.goals, axis=1), 0.3)
    small = SequenceCueEnv(n_goals=4, n_items=2, render_images=False)
    assert small.cues == 12 and set(small.reset(seed=0)[0]) == {"robot0_eef_pos"}


def test_forced_cue_by_index_or_sequence_keeps_the_scene(env):
    u = env.unwrapped
    a_obs, a = env.reset(seed=7)
    b_obs, b = env.reset(seed=7)
    assert a["cue"] == b["cue"] and a["sequence"] == b["sequence"]
    assert_obs_equal(a_obs, b_obs)
    drawn = {env.reset(seed=s)[1]["cue"] for s in range(40)}
    assert len(drawn) > 20  # the seed draws the cue from all 120
    other = (a["cue"] + 1) % 120
    for forced in (other, u.sequence_of(other), list(u.sequence_of(other))):
        obs, info = env.reset(seed=7, options={"cue": forced})
        assert info["cue"] == other and u.sequence == u.sequence_of(other) == info["sequence"]
        # The start position (the scene the seed draws) does not depend on the forced cue.
        np.testing.assert_array_equal(obs["robot0_eef_pos"], a_obs["robot0_eef_pos"])
    assert env.reset(seed=7, options={"cue": (3, 0, 5)})[1]["sequence"] == (3, 0, 5)
    for bad in (120, -1, (0, 0, 1), (0, 1), (0, 1, 6)):
        with pytest.raises(ValueError, match="cue"):
            env.reset(seed=0, options={"cue": bad})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(seed=0, options={"cue": 0, "sequence": (0, 1, 2)})


def test_schedule_lights_each_item_in_turn_and_holds_the_point(env):
    u = env.unwrapped
    assert (u.item_steps, u.cue_steps, u.delay_steps, u.max_steps) == (4, 12, 10, 67)
    obs, _ = env.reset(seed=3, options={"cue": (4, 0, 2)})
    start = obs["robot0_eef_pos"].copy()
    size = u.image_size
    for t in range(u.cue_steps + u.delay_steps):
        img = obs["agentview_image"].astype(int)
        red = (img[..., 0] > 150) & (img[..., 1] < 80)  # (S, S) cue-coloured pixels
        if t < u.cue_steps:
            rows, cols = np.nonzero(red)
            assert len(rows) > 2, f"no cue pixels at step {t}"
            # Image centre of the lit pixels -> metres (row 0 = +y, column 0 = -x).
            x = ((cols.mean() + 0.5) / size - 0.5) * 2 * HALF_VIEW
            y = (0.5 - (rows.mean() + 0.5) / size) * 2 * HALF_VIEW
            lit = int(np.argmin(np.linalg.norm(u.goals - [x, y], axis=1)))
            assert lit == (4, 0, 2)[t // u.item_steps], f"step {t}"
        else:
            assert not red.any(), f"a pad is still lit at step {t}"
        obs, _, terminated, truncated, info = env.step(np.ones(7))  # ignored: full speed +x +y
        assert not (terminated or truncated) and info["reached"] == -1
        np.testing.assert_array_equal(obs["robot0_eef_pos"], start)
    obs, *_ = env.step(np.ones(7))
    assert np.all(obs["robot0_eef_pos"][:2] > start[:2] + 0.01)  # the action now moves it


def test_cue_is_invisible_after_the_cue(env):
    """Same seed, different cues, same actions: every observation after the cue is
    byte-identical; only the way the episode ends differs."""
    u = env.unwrapped
    seed, cue_a = 11, (0, 2, 4)
    observations_a, actions, info_a = run_expert(env, seed, cue_a)
    assert info_a["success"] and len(observations_a) > u.cue_steps + u.delay_steps + 3
    # cue_b shares the first item and fails where the expert enters pad 2; cue_c shares none
    # and fails at the first pad.
    for cue, same_first_item, fails_at in [((0, 4, 2), True, 2), ((3, 1, 5), False, 0)]:
        observations, info = replay(env, seed, cue, actions)
        assert not info["success"] and info["reached"] == fails_at, info
        assert u.cue_steps + u.delay_steps < len(observations) <= len(observations_a)
        for t, (o_a, o) in enumerate(zip(observations_a, observations)):
            if t < u.cue_steps:
                np.testing.assert_array_equal(o_a["robot0_eef_pos"], o["robot0_eef_pos"])
                same = np.array_equal(o_a["agentview_image"], o["agentview_image"])
                assert same == (same_first_item and t < u.item_steps), f"{cue} step {t}"
            else:
                assert_obs_equal(o_a, o, where=f"{cue} step {t}")


def test_visiting_out_of_order_or_a_non_target_pad_fails(env):
    cue = (0, 1, 2)
    env.reset(seed=2, options={"cue": cue})
    hold(env)
    terminated, info = drive_to(env, 1)  # a target, but the second one
    assert terminated and not info["success"] and info["progress"] == 0

    env.reset(seed=2, options={"cue": cue})
    hold(env)
    terminated, info = drive_to(env, 0)
    assert not terminated and info["progress"] == 1
    terminated, info = drive_to(env, 3)  # not in the sequence
    assert terminated and not info["success"] and info["reached"] == 3


def test_visiting_in_order_succeeds_and_visited_pads_may_be_crossed_again(env):
    env.reset(seed=2, options={"cue": (0, 1, 2)})
    hold(env)
    progress = []
    for pad in (0, 1, 0, 1, 2):  # back over pads 0 and 1, already visited in order
        terminated, info = drive_to(env, pad)
        progress.append(info["progress"])
        assert terminated == (pad == 2)
    assert progress == [1, 2, 2, 2, 3] and info["success"]


def test_max_steps_truncates(env):
    u = env.unwrapped
    env.reset(seed=0)
    for t in range(u.max_steps):
        *_, terminated, truncated, info = env.step(np.zeros(7))  # never leaves the centre
        assert not terminated and truncated == (t == u.max_steps - 1)
    assert not info["success"]


def test_expert_succeeds(env):
    u = env.unwrapped
    for seed in range(12):
        observations, actions, info = run_expert(env, seed)
        assert info["success"] and info["progress"] == 3, f"seed {seed}: {info}"
        assert len(actions) < u.max_steps - 10
        # While held, the expert already commands its move towards the first pad.
        held = u.cue_steps + u.delay_steps
        first = u.goals[info["sequence"][0]] - observations[0]["robot0_eef_pos"][:2]
        assert np.all(np.asarray(actions[:held])[:, :2] @ first > 0), f"seed {seed}"
    assert isinstance(u.make_expert(noise=0.05, seed=0), SequenceCueExpert)


def test_sim_state_round_trip(env):
    u = env.unwrapped
    observations, actions, _ = run_expert(env, seed=5, cue=(5, 3, 1))
    env.reset(seed=5, options={"cue": (5, 3, 1)})
    for t, action in enumerate(actions):
        if t in (6, len(actions) - 4):  # inside the cue; after a pad was visited
            saved = u.get_sim_state()
            assert u.progress == (0 if t == 6 else 2)
            assert saved.shape == (STATE_SIZE,) and saved.dtype == np.float64
            after = [env.step(a)[0] for a in actions[t:]]
            env.reset(seed=99, options={"cue": 0})  # a different scene and cue
            u.set_sim_state(saved)
            assert_obs_equal(u.get_obs(), observations[t], where=f"restored at {t}")
            for k, a in enumerate(actions[t:]):
                assert_obs_equal(env.step(a)[0], after[k], where=f"replay {t}+{k}")
            u.set_sim_state(saved)
        env.step(action)
    with pytest.raises(ValueError, match=r"shape \(8,\)"):
        u.set_sim_state(np.zeros(7))


def test_registry_entry_gym_id_and_env_args():
    assert envs.task_id("SequenceCue") == "ttm/SequenceCue-v0"
    spec = envs.task_spec("SequenceCue")
    assert spec.cued and (spec.recipe.episodes, spec.recipe.image_size) == (200, 32)
    assert spec.recipe.cameras is None
    e = gym.make("ttm/SequenceCue-v0", n_goals=5, delay_steps=4, image_size=16)
    u = e.unwrapped
    args = u.env_args()
    assert args["env_name"] == "ttm/SequenceCue-v0" and args["type"] == 2
    other = make_from_env_args(args)
    assert other.unwrapped.env_args() == args and other.unwrapped.cues == 5 * 4 * 3
    assert_obs_equal(other.reset(seed=4)[0], e.reset(seed=4)[0])
    # A new delay without a new limit gets the default limit for that delay.
    longer = make_from_env_args(args, delay_steps=20)
    assert longer.unwrapped.max_steps == 12 + 20 + 45
    for x in (e, other, longer):
        x.close()
    mujoco.MjModel.from_xml_string(u.model_xml())  # the stored MJCF compiles on its own
    # --paired-cues applies: each scene once per cue index.
    jobs = episode_jobs(Args(task="SequenceCue", out="x.hdf5", episodes=240, paired_cues=True), 120)
    assert [o["cue"] for _, o in jobs[:3]] == [0, 1, 2] and jobs[0][0] == jobs[119][0]


def test_bad_kwargs_name_the_problem():
    with pytest.raises(ValueError, match="n_items"):
        SequenceCueEnv(n_goals=3, n_items=4)
    with pytest.raises(ValueError, match="n_goals"):
        SequenceCueEnv(n_goals=9)
    with pytest.raises(ValueError, match="max_steps"):
        SequenceCueEnv(max_steps=22)
    with pytest.raises(ValueError, match="robot0_eye_in_hand"):
        SequenceCueEnv(cameras=("robot0_eye_in_hand",))
    e = SequenceCueEnv(render_images=False)
    e.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(7,\)"):
        e.step(np.zeros(2))


def test_collect_two_episodes_and_replay_them(tmp_path):
    out = tmp_path / "sequence_cue.hdf5"
    summary = collect(Args(task="SequenceCue", out=out, episodes=2, seed=1, valid_fraction=0.5))
    assert summary["episodes_kept"] == 2 and summary["expert_success_rate"] == 1.0
    with h5py.File(out) as f:
        assert demo_names(f) == ["demo_0", "demo_1"]
        env_args = read_env_args(f)
        assert env_args["env_name"] == "ttm/SequenceCue-v0"
        demos = [read_demo(f, name) for name in demo_names(f)]
    env = make_from_env_args(env_args)
    u = env.unwrapped
    for demo in demos:
        n = len(demo["actions"])
        assert demo["states"].shape == (n, STATE_SIZE)
        assert demo["obs"]["agentview_image"].shape == (n, 32, 32, 3)
        assert n > u.cue_steps + u.delay_steps
        # Recreated from env_args and reset with the stored seed, the env replays the demo.
        obs, _ = env.reset(seed=int(demo["attrs"]["seed"]))
        replay_demo(env, demo, obs)
    env.close()
