"""The learning test that shows why this package exists: on `ttm/PointCue-v0` (cue 5 steps,
delay 10, the defaults) a TTM policy trained by behaviour cloning reaches the cued goal, and
the memory-less TTM, trained on the same demos with the same budget, cannot beat a coin flip.

Recipe (scripts/pointcue_learning.sh runs the same from the command line): 200 expert demos
at 32x32 px; whole padded episodes (the only way ttm-train samples) so the cue and the decision are in one
sequence; a small model (D=32, a (8, 8, 16, 16) conv trunk giving 4 tokens, TTM with M=8
memory tokens, R=4, one Transformer layer); L1 loss, AdamW 2e-3, batch 16, 500 steps; 50
seeded rollouts in the real env. Measured (training seeds 0-4): TTM 50/50 each, memory-less
26, 30, 27, 28, 30 of 50. About 170 CPU-seconds in all (1 thread): ~3 minutes on idle cores.
The memory-less policy reaches a pad in nearly every episode, on a side that does not depend
on the cue, so its count is ~Binomial(50, 1/2): it passes 0.65 (33/50) with probability ~2%
after a change that reshuffles its choices; that is the price of the issue's 50 rollouts.

Labels of ignored actions. While the point is held (cue + delay, 15 steps) the env ignores
actions; the expert already commands its move towards the cued pad there (see
`PointCueExpert`). With zero labels instead, the policy must count 15 identical frames and
only the single release step depends on the cue: measured, a TTM then stayed at 1-3/50.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from envs.collect import Args, collect
from envs.rollout import format_result, rollout, wilson
from eval.quickstart import QuickstartConfig
from eval.quickstart import train_config as quickstart_train_config
from train.train import TrainConfig, train
from ttm_policy.policy import TTMPolicy

EPISODES = 50  # rollouts per policy (the 50)


def train_config(dataset: Path, out: Path, policy: str) -> TrainConfig:
    """The quickstart's recipe (one source of truth), for `policy`, saving only at the end."""
    recipe = quickstart_train_config(QuickstartConfig(steps=500, seed=0), dataset)
    return replace(recipe, out=out, policy=policy, threads=1, save_every=500, log_every=50)


@pytest.mark.slow
def test_ttm_solves_pointcue_and_the_memoryless_policy_cannot(tmp_path):
    data = tmp_path / "point_cue.hdf5"
    summary = collect(Args(task="PointCue", out=data, episodes=200, image_size=32))
    env_args = summary["env_args"]
    assert env_args["env_kwargs"]["cue_steps"] == 5
    assert env_args["env_kwargs"]["delay_steps"] == 10

    results = {}
    for policy in ("ttm", "ttm-memoryless"):
        out = train(train_config(data, tmp_path / policy, policy))
        trained = TTMPolicy.from_pretrained(out["last_checkpoint"])
        results[policy] = rollout(trained, env_args, EPISODES, seed=0)
    report = "; ".join(format_result(name, r) for name, r in results.items())
    print(report)

    assert results["ttm"]["success_rate"] >= 0.90, report
    assert results["ttm-memoryless"]["success_rate"] <= 0.65, report
    # The memory-less policy does move and reach a pad; it just cannot know which one.
    assert np.mean([e["length"] for e in results["ttm-memoryless"]["episodes"]]) < 60, report


def test_wilson_interval_known_values():
    assert wilson(0, 50) == pytest.approx((0.0, 0.0713), abs=1e-4)
    assert wilson(50, 50) == pytest.approx((0.9287, 1.0), abs=1e-4)
    assert wilson(25, 50) == pytest.approx((0.3664, 0.6336), abs=1e-4)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson(3, 2)


class StandStill:
    """A real (if useless) policy: zero actions; counts its resets."""

    def __init__(self):
        self.resets = 0

    def reset(self):
        self.resets += 1

    def select_action(self, obs):
        return np.zeros(7)


def test_rollout_seeds_episodes_and_resets_the_policy():
    policy = StandStill()
    kwargs = {"render_images": False}
    a = rollout(policy, "PointCue", 3, seed=1, env_kwargs=kwargs, max_steps=20)
    b = rollout(StandStill(), "ttm/PointCue-v0", 3, seed=1, env_kwargs=kwargs, max_steps=20)
    assert policy.resets == 3
    assert [e["seed"] for e in a["episodes"]] == [100003, 100004, 100005]
    assert a["episodes"] == b["episodes"]
    assert [e["length"] for e in a["episodes"]] == [20, 20, 20]  # max_steps caps the episode
    assert a["success_rate"] == 0.0 and a["ci95"] == wilson(0, 3)


class GoToPad0:
    """Drives the point to pad 0 whatever the cue: right on cue 0, the wrong choice on cue 1."""

    def reset(self):
        pass

    def select_action(self, obs):
        from envs.point_cue import CONTROL_DT, GOALS, MAX_SPEED

        v = 0.8 * (GOALS[0] - obs["robot0_eef_pos"][:2]) / (MAX_SPEED * CONTROL_DT)
        return np.concatenate([v / max(1.0, float(np.linalg.norm(v))), np.zeros(5)])


def test_outcomes_tell_wrong_choices_from_timeouts():
    kwargs = {"render_images": False}
    r = rollout(GoToPad0(), "PointCue", 8, seed=0, env_kwargs=kwargs)
    cues = [gym_cue(e["seed"]) for e in r["episodes"]]
    assert set(cues) == {0, 1}  # both cues among these seeds
    assert [e["outcome"] for e in r["episodes"]] == [
        "success" if c == 0 else "failure" for c in cues
    ]
    assert r["failures"] == cues.count(1) and r["timeouts"] == 0
    still = rollout(StandStill(), "PointCue", 2, seed=0, env_kwargs=kwargs, max_steps=20)
    assert [e["outcome"] for e in still["episodes"]] == ["timeout", "timeout"]
    assert (still["failures"], still["timeouts"]) == (0, 2)
    assert format_result("still", still).endswith("; 0 failed, 2 timed out)")


def gym_cue(seed: int) -> int:
    """The cue PointCue draws for reset seed `seed`."""
    import gymnasium as gym

    env = gym.make("ttm/PointCue-v0", render_images=False)
    try:
        return int(env.reset(seed=seed)[1]["cue"])
    finally:
        env.close()
