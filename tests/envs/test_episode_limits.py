"""Episode limits of the cued tasks grow with the delay, and stay what they were at the delays
the results were measured at (real MuJoCo / robosuite envs)."""

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.collect import env_class
from envs.cued_tasks import LiftCuedEnv, PlaceCuedEnv
from envs.point_cue import PointCueEnv
from envs.touch_sequence_cued import TouchSequenceCuedEnv


@pytest.mark.parametrize("delay, limit", [(0, 60), (10, 60), (30, 60), (31, 61), (100, 130)])
def test_pointcue_limit_grows_with_the_delay(delay, limit):
    env = PointCueEnv(delay_steps=delay, render_images=False)
    assert env.max_steps == limit  # 60 up to delay 30 (the results' delays 10 and 30)
    assert env.env_args()["env_kwargs"]["max_steps"] == limit  # re-created exactly
    assert PointCueEnv(delay_steps=delay, max_steps=200).max_steps == 200  # given: kept


def test_pointcue_expert_succeeds_after_a_100_step_delay():
    """At delay 100 the episode leaves room for the cue, the delay and the reach itself."""
    env = gym.make(envs.task_id("PointCue"), delay_steps=100, cameras=())
    u = env.unwrapped
    for cue in (0, 1):
        obs, info = env.reset(seed=cue, options={"cue": cue})
        expert, steps, done = u.make_expert(seed=cue), 0, False
        while not done:
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            steps, done = steps + 1, terminated or truncated
        assert info["success"] and not truncated, (cue, steps, info)
        assert u.cue_steps + u.delay_steps < steps < u.max_steps
    env.close()


@pytest.mark.parametrize("delay", [100, 200])
@pytest.mark.parametrize("cls", [LiftCuedEnv, PlaceCuedEnv])
def test_robosuite_cued_horizon_grows_with_the_delay(cls, delay):
    env = gym.make(envs.task_id(cls.ENV_NAME), delay_steps=delay, cameras=())
    u = env.unwrapped
    held = u.suite.cue_steps + u.suite.delay_steps
    assert held == 10 + delay and u.horizon == cls.DEFAULT_HORIZON + held  # all of it to act
    assert u.env_args()["env_kwargs"]["ttm_wrapper"]["horizon"] == u.horizon  # re-created
    env.close()
    short = gym.make(envs.task_id(cls.ENV_NAME), delay_steps=10, cameras=())
    assert short.unwrapped.horizon == cls.DEFAULT_HORIZON + 20  # as before, at delay 10
    short.close()
    with pytest.raises(ValueError, match=f"horizon={delay} ends the episode before the arm"):
        gym.make(envs.task_id(cls.ENV_NAME), delay_steps=delay, horizon=delay, cameras=())


@pytest.mark.slow
@pytest.mark.parametrize("task", ["LiftCued", "PlaceCued", "TouchSequenceCued"])
def test_robosuite_cued_expert_succeeds_after_a_200_step_delay(task):
    """At delay 200 the arm stays where it was through the 210+ held steps (no drift under the
    hold-still action), and the episode leaves the expert room to finish."""
    env = gym.make(envs.task_id(task), delay_steps=200, cameras=())
    u = env.unwrapped
    held = u.suite.cue_steps + u.suite.delay_steps
    obs, info = env.reset(seed=2)
    start, expert = obs["robot0_eef_pos"].copy(), u.make_expert(noise=0.05, seed=2)
    steps, done = 0, False
    while not done:
        obs, _, terminated, truncated, info = env.step(expert.act(obs))
        steps, done = steps + 1, terminated or truncated
        if steps == held:
            np.testing.assert_allclose(obs["robot0_eef_pos"], start, atol=2e-3)
    assert info["success"] and not truncated, (task, steps, info)
    assert held < steps < u.horizon - 10
    env.close()


@pytest.mark.parametrize("delay", [10, 100, 200])
def test_touchsequencecued_limit_grows_with_the_delay(delay):
    """3 items x 5 cue steps, the delay, then 45 steps per item to act, whatever the delay;
    re-created from env_args, and at twice the delay (ttm-eval --env-kwargs) the limit of that
    delay."""
    from envs.env_args import make_from_env_args

    env = gym.make(envs.task_id("TouchSequenceCued"), delay_steps=delay, cameras=())
    u = env.unwrapped
    assert u.horizon == 15 + delay + 3 * 45
    stored = u.env_args()
    env.close()
    assert stored["env_kwargs"]["delay_steps"] == delay
    longer = make_from_env_args(stored, delay_steps=2 * delay)
    assert longer.unwrapped.horizon == u.horizon + delay
    longer.close()
    with pytest.raises(ValueError, match="ends the episode before the arm may move"):
        TouchSequenceCuedEnv(delay_steps=delay, horizon=15 + delay, cameras=())


@pytest.mark.parametrize("delay", [10, 100, 200])
def test_sequencecue_limit_grows_with_the_delay_and_the_expert_finishes(delay):
    """3 items x 4 cue steps, the delay, then 15 steps to move per item, whatever the delay."""
    env = gym.make(envs.task_id("SequenceCue"), delay_steps=delay, cameras=())
    u = env.unwrapped
    assert u.max_steps == 12 + delay + 45
    assert u.env_args()["env_kwargs"]["max_steps"] == u.max_steps  # re-created exactly
    obs, info = env.reset(seed=delay)
    expert, done = u.make_expert(seed=delay), False
    while not done:
        obs, _, terminated, truncated, info = env.step(expert.act(obs))
        done = terminated or truncated
    assert info["success"] and not truncated, info
    env.close()


def test_every_cued_task_is_covered():
    """A new cued task must be added to the tests above."""
    assert {n for n in envs.TASKS if getattr(env_class(n), "cues", None)} == {
        "PointCue",
        "LiftCued",
        "PlaceCued",
        "SequenceCue",
        "TouchSequenceCued",
    }


@pytest.mark.parametrize("task", ["PointCue", "LiftCued"])
def test_a_delay_override_at_eval_time_gets_the_limit_of_that_delay(task):
    """ttm-eval --env-kwargs '{"delay_steps": 100}' on a run trained at delay 10: the stored
    limit was for delay 10, so it must not cut the longer episode short."""
    from envs.env_args import make_from_env_args

    env = gym.make(envs.task_id(task), delay_steps=10, cameras=())
    stored = env.unwrapped.env_args()
    env.close()
    short = make_from_env_args(stored)
    longer = make_from_env_args(stored, delay_steps=100)
    fixed = make_from_env_args(stored, delay_steps=100, **{_limit(short): 500})
    limits = [_limit_value(e) for e in (short, longer, fixed)]
    assert limits[1] == limits[0] + 90 if task == "LiftCued" else limits[1] == 130
    assert limits[2] == 500
    for e in (short, longer, fixed):
        e.close()


def _limit(env) -> str:
    return "horizon" if hasattr(env.unwrapped, "suite") else "max_steps"


def _limit_value(env) -> int:
    u = env.unwrapped
    return u.horizon if hasattr(u, "suite") else u.max_steps
