"""The one rollout loop (`envs.rollout.run_episodes`): episode i has the same seed and the same
outcome however many envs run it, and the policy is reset exactly where episodes start."""

from __future__ import annotations

import functools

import numpy as np

from envs.point_cue import CONTROL_DT, GOALS, MAX_SPEED
from envs.rollout import episode_seed, make_env, rollout, run_episodes

KWARGS = {"render_images": False}


class GoToPad0:
    """E envs at once: drives every point to pad 0 (success on cue 0, a wrong choice on cue 1);
    records every reset mask."""

    def __init__(self):
        self.resets: list = []

    def reset(self, mask=None):
        self.resets.append(None if mask is None else np.asarray(mask).tolist())

    def select_action(self, obs):
        v = 0.8 * (GOALS[0] - obs["robot0_eef_pos"][:, :2]) / (MAX_SPEED * CONTROL_DT)  # (E, 2)
        v = v / np.maximum(1.0, np.linalg.norm(v, axis=1, keepdims=True))
        return np.concatenate([v, np.zeros((len(v), 5))], axis=1)  # (E, 7)


class OneEnv:
    """The same driver for `rollout`'s one observation at a time."""

    def __init__(self):
        self.batched = GoToPad0()

    def reset(self):
        self.batched.reset()

    def select_action(self, obs):
        return self.batched.select_action({k: v[None] for k, v in obs.items()})[0]


def test_two_envs_give_the_one_env_episodes():
    one = rollout(OneEnv(), "PointCue", 5, seed=2, env_kwargs=KWARGS)
    policy = GoToPad0()
    fns = [functools.partial(make_env, "PointCue", KWARGS)] * 2
    two = run_episodes(policy, fns, episodes=5, seed=2, progress=False)
    eps = two["per_episode"]
    assert [e["episode"] for e in eps] == list(range(5))
    assert [e["seed"] for e in eps] == [episode_seed(2, i) for i in range(5)]
    assert {e["outcome"] for e in eps} == {"success", "failure"}  # both cues among these seeds
    assert [{k: v for k, v in e.items() if k != "episode"} for e in eps] == one["episodes"]
    # One reset of all envs, then resets of the envs that finished (5 episodes in 2 slots:
    # episodes 2, 3, 4 start in a slot whose episode ended); dummy steps are not counted.
    assert policy.resets[0] is None
    masks = policy.resets[1:]
    assert all(len(m) == 2 and any(m) for m in masks) and sum(map(sum, masks)) >= 3
    assert two["env_steps"] == sum(e["length"] for e in eps)


def test_partial_progress_is_recorded_per_episode_and_counted():
    """SequenceCue reports how many items were visited in order: driving to pad 0 and staying
    visits one item when the sequence starts with pad 0 (then times out) and fails at once
    otherwise; eval.json's per-episode `progress` and its counts say which."""
    from envs.rollout import summarise
    from envs.sequence_cue import goal_positions

    class GoToTop(GoToPad0):
        def select_action(self, obs):
            v = (
                0.8
                * (goal_positions(6)[0] - obs["robot0_eef_pos"][:, :2])
                / (MAX_SPEED * CONTROL_DT)
            )
            v = v / np.maximum(1.0, np.linalg.norm(v, axis=1, keepdims=True))
            return np.concatenate([v, np.zeros((len(v), 5))], axis=1)

    fns = [functools.partial(make_env, "SequenceCue", KWARGS)]
    eps = run_episodes(GoToTop(), fns, episodes=12, seed=0, progress=False)["per_episode"]
    env = make_env("SequenceCue", KWARGS)
    for e in eps:
        _, info = env.reset(seed=e["seed"])
        first = info["sequence"][0] == 0
        assert e["progress"] == int(first) and e["outcome"] == ("timeout" if first else "failure")
    assert summarise(eps)["progress"] == {
        str(p): sum(e["progress"] == p for e in eps) for p in (0, 1)
    }
    assert any(e["progress"] == 1 for e in eps)  # 12 seeds: some sequences start at pad 0


class TorchDraws:
    """A policy that draws its actions from torch's generator, as the recipe draws open/close;
    records every action."""

    def __init__(self):
        self.actions: list = []

    def reset(self):
        pass

    def select_action(self, obs):
        import torch

        a = (torch.rand(7) * 2 - 1).numpy()
        self.actions.append(a)
        return a


def test_rollout_seeds_the_policys_draws_and_restores_the_callers_generator():
    import torch

    def actions(seed):
        policy = TorchDraws()
        rollout(policy, "ttm/PointCue-v0", 2, seed=seed, env_kwargs=KWARGS, max_steps=5)
        return np.stack(policy.actions)

    torch.manual_seed(123)
    first = actions(4)
    after = torch.rand(3)
    torch.manual_seed(123)
    expected = torch.rand(3)
    assert torch.equal(after, expected)  # the caller's generator is where it was
    assert first.shape == (10, 7)
    np.testing.assert_array_equal(actions(4), first)  # whatever ran before, the same draws
    assert not np.array_equal(actions(5), first)  # another seed, other draws


class RecordsFrames:
    """A one-env policy that reads only `agentview_image` (as a `cfg` declares) and keeps
    every observation it is given; holds still."""

    class cfg:  # what `envs.rollout` reads of a policy's config
        obs_keys = ("agentview_image",)
        camera_keys = ("agentview_image",)
        lowdim_keys = ()
        image_size = 32
        core = "none"

    def __init__(self):
        self.seen: list[dict] = []

    def reset(self, mask=None):
        pass

    def select_action(self, obs):
        self.seen.append({k: np.array(v) for k, v in obs.items()})
        return np.zeros((1, 7))


def test_robosuite_evaluation_renders_only_the_cameras_the_policy_reads():
    """A policy of one camera on a two-camera dataset's env: the env renders that camera alone
    (half the frames), and its frames are the ones the two-camera env gives."""
    from envs.robosuite_tasks import LiftEnv
    from envs.rollout import run_rollouts

    both = LiftEnv(cameras=("agentview", "robot0_eye_in_hand"), image_size=32, horizon=4)
    args = both.env_args()
    policy = RecordsFrames()
    report = run_rollouts(policy, args, episodes=1, seed=3)
    assert report["env_overrides"] == {"cameras": ["agentview"]}
    assert all("robot0_eye_in_hand_image" not in o for o in policy.seen)
    obs, _ = both.reset(seed=episode_seed(3, 0))
    frames = [obs["agentview_image"]]
    for _ in range(len(policy.seen) - 1):
        obs, *_ = both.step(np.zeros(7))
        frames.append(obs["agentview_image"])
    assert len(policy.seen) == 4
    for seen, frame in zip(policy.seen, frames, strict=True):
        np.testing.assert_array_equal(seen["agentview_image"][0], frame)
    # What the caller chose stands.
    chosen = run_rollouts(RecordsFrames(), args, episodes=1, overrides={"cameras": ["agentview"]})
    assert chosen["env_overrides"] == {"cameras": ["agentview"]}
