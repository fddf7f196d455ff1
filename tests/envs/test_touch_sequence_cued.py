"""TouchSequenceCued: cue encoding, each item lit in turn, cue invisibility, seeded layouts,
touching order, expert, episode limit, collection and replay (real robosuite)."""

import gymnasium as gym
import h5py
import numpy as np
import pytest

import envs
from envs.collect import Args, collect, episode_jobs, run_episode
from envs.cued_tasks import GREY
from envs.env_args import make_from_env_args
from envs.hdf5 import demo_names, read_demo, read_env_args
from envs.touch_sequence_cued import (
    TouchSequenceCuedEnv,
    TouchSequenceCuedExpert,
)
from tests.envs.test_collect import replay as replay_demo
from tests.envs.test_point_cue import assert_obs_equal, run_expert

TASK = "TouchSequenceCued"


@pytest.fixture(scope="module")
def lowdim():
    """The default task without cameras (fast): for what images do not matter to."""
    env = gym.make(envs.task_id(TASK), cameras=())
    yield env
    env.close()


def cube_positions(env) -> np.ndarray:
    s = env.unwrapped.suite
    return np.array([s.sim.data.body_xpos[i] for i in s.cube_body_ids])  # (n_cubes, 3)


def green(image: np.ndarray) -> np.ndarray:
    """(H, W) mask of cue-green pixels."""
    return (image[..., 1] > 150) & (image[..., 0] < 100) & (image[..., 2] < 100)


def test_observations_cue_encoding_and_registry():
    env = gym.make(envs.task_id(TASK), image_size=32)
    u = env.unwrapped
    obs, info = env.reset(seed=0)
    assert set(obs) == {
        "agentview_image",
        "robot0_eye_in_hand_image",
        "robot0_eef_pos",
        "robot0_eef_quat",
        "robot0_gripper_qpos",
        "object",
    }
    assert obs["agentview_image"].shape == (32, 32, 3) and obs["object"].shape == (4 * 7,)
    assert env.observation_space.contains(obs) and env.action_space.shape == (7,)
    assert info["success"] is False and info["progress"] == 0
    assert info["sequence"] == u.suite.sequence_of(info["cue"])
    # Default sizes: 4 cubes, 3 items -> 4 * 3 * 2 ordered sequences, indexed lexicographically.
    assert TouchSequenceCuedEnv.cues == u.cues == 24
    assert u.suite.sequence_of(0) == (0, 1, 2) and u.suite.sequence_of(23) == (3, 2, 1)
    assert all(u.suite.cue_of(u.suite.sequence_of(c)) == c for c in range(24))
    # Cue 15 + delay 10 held steps, then 45 steps per item.
    assert (u.suite.cue_steps, u.suite.delay_steps, u.horizon) == (15, 10, 25 + 3 * 45)
    assert isinstance(u.make_expert(noise=0.05, seed=0), TouchSequenceCuedExpert)
    spec = envs.task_spec(TASK)
    assert spec.cued and spec.recipe.cameras == ("agentview", "robot0_eye_in_hand")
    small = TouchSequenceCuedEnv(n_cubes=3, n_items=3, cameras=())
    assert small.cues == 6 and small.reset(seed=0)[0]["object"].shape == (3 * 7,)
    small.close()
    env.close()


def test_each_item_is_lit_in_turn_then_the_cue_is_gone():
    """Observation t of the cue shows item t // item_steps's pad green (agentview: slot 0 on
    the left); afterwards no pad is green. Actions are ignored while held."""
    env = gym.make(envs.task_id(TASK), cameras=("agentview",), image_size=64, delay_steps=2)
    u = env.unwrapped
    obs, _ = env.reset(seed=4, options={"cue": (2, 0, 3)})
    start = obs["robot0_eef_pos"].copy()
    lit_columns = []
    for t in range(u.suite.cue_steps + u.suite.delay_steps):
        mask = green(obs["agentview_image"])
        if t < u.suite.cue_steps:
            assert mask.sum() > 30, f"cue too small at observation {t}: {mask.sum()} pixels"
            lit_columns.append(np.nonzero(mask)[1].mean())
        else:
            assert not mask.any(), f"a pad is still green at observation {t}"
        obs, *_ = env.step(np.ones(7))  # ignored: full speed
    np.testing.assert_allclose(obs["robot0_eef_pos"], start, atol=2e-3)
    # The lit pad's image column orders the slots: 0 < 2 < 3, and the cue shows 2, 0, 3.
    cols = np.array(lit_columns).reshape(3, u.suite.item_steps)
    assert np.ptp(cols, axis=1).max() < 1  # one pad per item
    assert cols[1, 0] < cols[0, 0] < cols[2, 0]
    env.close()


def test_cue_is_invisible_after_the_cue():
    """Same scene seed, different cues, the same actions: every observation after the cue is
    byte-identical, images included; during the cue only the images differ, and only while
    the items shown differ (the two sequences share their first item)."""
    item_steps, delay = 2, 2
    env = gym.make(envs.task_id(TASK), item_steps=item_steps, delay_steps=delay, image_size=32)
    cue_steps = 3 * item_steps
    # The expert's actions for the first cue touch cube 1, then 3: for the second cue, 3 is
    # out of order and ends the episode there.
    expert_run, actions, info = run_expert(env, 9, cue=(1, 3, 0), noise=0.0)
    assert info["success"]
    obs, _ = env.reset(seed=9, options={"cue": (1, 2, 3)})
    replayed = [obs]
    for a in actions:
        obs, _, terminated, truncated, info = env.step(a)
        replayed.append(obs)
        if terminated or truncated:
            break
    assert info["failure"] and info["progress"] == 1
    assert cue_steps + delay + 20 < len(replayed) < len(expert_run)
    for t, (a, b) in enumerate(zip(expert_run, replayed)):
        if t < cue_steps:
            for key in a:
                if not key.endswith("_image"):
                    assert np.array_equal(a[key], b[key]), f"{key} differs at observation {t}"
            same = np.array_equal(a["agentview_image"], b["agentview_image"])
            assert same == (t < item_steps), f"agentview at observation {t}"
            assert np.array_equal(a["robot0_eye_in_hand_image"], b["robot0_eye_in_hand_image"]) == (
                t < item_steps
            )
        else:
            assert_obs_equal(a, b, where=f"observation {t}")
    env.close()


def test_layouts_come_from_the_seed_and_not_from_the_cue(lowdim):
    lowdim.reset(seed=3)
    a = cube_positions(lowdim)
    lowdim.reset(seed=3, options={"cue": 5})
    np.testing.assert_array_equal(cube_positions(lowdim), a)
    lowdim.reset(seed=4)
    b = cube_positions(lowdim)
    assert np.abs(a - b).max() > 1e-3
    # Each cube stays in its slot: on its pad, slots 10 cm apart in y, slot 0 at -y.
    for pos in (a, b):
        np.testing.assert_allclose(pos[:, 1], [-0.15, -0.05, 0.05, 0.15], atol=0.0151)
        assert np.abs(pos[:, 0]).max() <= 0.0301
    cues = {lowdim.reset(seed=s)[1]["cue"] for s in range(40)}
    assert len(cues) > 12  # the seed draws the cue from all 24
    assert lowdim.reset(seed=3)[1]["cue"] == lowdim.reset(seed=3)[1]["cue"]
    for bad in (24, -1, (0, 0, 1), (0, 1), (0, 1, 4)):
        with pytest.raises(ValueError, match="cue"):
            lowdim.reset(seed=0, options={"cue": bad})


def test_expert_touches_the_cubes_in_order(lowdim):
    """The expert succeeds (noise 0.05, as ttm-collect) with room to spare before the limit;
    each item's touch is counted in order; while held, its labels already move towards the
    first cube."""
    u = lowdim.unwrapped
    held = u.suite.cue_steps + u.suite.delay_steps
    for seed in range(3):
        obs, info = lowdim.reset(seed=seed)
        first = cube_positions(lowdim)[info["sequence"][0]] - obs["robot0_eef_pos"]
        expert = u.make_expert(noise=0.05, seed=seed)
        progress, labels, done = [], [], False
        while not done:
            action = expert.act(obs)
            labels.append(action)
            obs, _, terminated, truncated, info = lowdim.step(action)
            progress.append(info["progress"])
            done = terminated or truncated
        assert info["success"] and terminated and not info["failure"], (seed, info)
        assert len(progress) < u.horizon - 10
        assert progress[: held + 1] == [0] * (held + 1)
        assert sorted(set(progress)) == [0, 1, 2, 3] and progress == sorted(progress)
        assert np.all(np.asarray(labels[:held])[:, :2] @ first[:2] > 0), f"seed {seed}"


class _OutOfOrderExpert(TouchSequenceCuedExpert):
    """Touches the second item first."""

    def target_item(self):
        return self.suite.sequence[1]


class _NonTargetExpert(TouchSequenceCuedExpert):
    """Touches the first item, then the one cube not in the sequence."""

    def target_item(self):
        s = self.suite
        return s.sequence[0] if s.progress == 0 else ({0, 1, 2, 3} - set(s.sequence)).pop()


@pytest.mark.parametrize("expert, progress", [(_OutOfOrderExpert, 0), (_NonTargetExpert, 1)])
def test_a_wrong_touch_fails(lowdim, expert, progress):
    obs, _ = lowdim.reset(seed=1, options={"cue": (0, 2, 3)})
    ex, done = expert(lowdim.unwrapped, noise=0.0, seed=0), False
    while not done:
        obs, reward, terminated, truncated, info = lowdim.step(ex.act(obs))
        done = terminated or truncated
    assert terminated and info["failure"] and not info["success"] and reward == 0.0
    assert info["progress"] == progress


def test_bad_sizes_name_the_problem():
    with pytest.raises(ValueError, match="n_items"):
        TouchSequenceCuedEnv(n_cubes=3, n_items=4, cameras=())
    with pytest.raises(ValueError, match="n_cubes"):
        TouchSequenceCuedEnv(n_cubes=5, cameras=())
    with pytest.raises(ValueError, match="item_steps"):
        TouchSequenceCuedEnv(item_steps=0, cameras=())
    with pytest.raises(ValueError, match="pass item_steps"):
        TouchSequenceCuedEnv(cameras=(), suite_kwargs={"cue_steps": 5})


def test_a_stored_state_restores_the_cue_and_the_touches(lowdim):
    """`states` rows carry [cue, progress, failed]: restored into an episode of another scene
    and cue, a state inside the cue lights that cue's item, and a state after the first touch
    keeps the touch (the expert finishes from there in order)."""
    u = lowdim.unwrapped
    demo = run_episode(lowdim, seed=6, noise=0.05)
    states = demo["states"]
    model = u.suite.sim.model
    assert states.shape[1] == 1 + model.nq + model.nv + 3  # [time, qpos, qvel] + the task's 3
    cue = int(states[0, -3])
    sequence = u.suite.sequence_of(cue)
    lowdim.reset(seed=12345, options={"cue": (cue + 1) % 24})
    u.set_sim_state(states[7])  # observation 7 shows item 1
    rgba = u.suite.sim.model.geom_rgba[u.suite._cue_geom_ids]  # (n_cubes, 4) the pads
    assert [k for k, c in enumerate(rgba) if not np.allclose(c, GREY)] == [sequence[1]]
    touched = int(np.argmax(states[:, -2] == 1))  # the first state after the first touch
    assert touched > 25
    lowdim.reset(seed=12345, options={"cue": (cue + 1) % 24})
    u.set_sim_state(states[touched])
    np.testing.assert_array_equal(u.get_sim_state(), states[touched])
    assert u.progress == 1 and u.cue == cue
    rgba = u.suite.sim.model.geom_rgba[u.suite._cue_geom_ids]
    assert all(np.allclose(c, GREY) for c in rgba)
    # Closed loop: robosuite's controller keeps state that `states` lacks, so a demo's own
    # actions replay exactly only from the episode's start (the collection test does that).
    obs, expert, progress, done = u.get_obs(), u.make_expert(seed=0), [], False
    while not done:
        obs, _, terminated, truncated, info = lowdim.step(expert.act(obs))
        progress.append(info["progress"])
        done = terminated or truncated
    assert info["success"] and progress[0] == 1 and progress[-1] == 3


@pytest.mark.slow
def test_collect_writes_a_file_that_replays(tmp_path):
    """ttm-collect's file (both cameras at 64 px, the recipe's) re-creates the env from its
    env_args; reset with the stored seed, the demo replays byte for byte and succeeds."""
    out = tmp_path / "touch.hdf5"
    summary = collect(
        Args(
            task=TASK,
            out=out,
            episodes=1,
            cameras=("agentview", "robot0_eye_in_hand"),
            image_size=64,
        )
    )
    assert summary["episodes_kept"] == 1 and summary["expert_success_rate"] == 1.0
    with h5py.File(out) as f:
        env_args = read_env_args(f)
        demo = read_demo(f, demo_names(f)[0])
    assert env_args["env_name"] == TASK and env_args["type"] == 1
    assert demo["obs"]["robot0_eye_in_hand_image"].shape[1:] == (64, 64, 3)
    env = make_from_env_args(env_args)
    obs, _ = env.reset(seed=int(demo["attrs"]["seed"]))
    replay_demo(env, demo, obs)
    env.close()
    # --paired-cues: every scene once per cue.
    jobs = episode_jobs(Args(task=TASK, out=out, episodes=48, paired_cues=True), 24)
    assert [o["cue"] for _, o in jobs[:3]] == [0, 1, 2] and jobs[0][0] == jobs[23][0]
