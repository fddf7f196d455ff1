"""ttm-eval on a tiny real checkpoint: consistent eval.json, readable videos, the same
outcomes for the same seed, and one clear error for a mismatched or corrupt checkpoint."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from envs.collect import Args, collect
from envs.rollout import episode_seed
from eval.evaluate import EvalConfig, EvalError, evaluate
from train.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    collect(Args(task="PointCue", out=root / "d.hdf5", episodes=4, seed=0))
    cfg = TrainConfig(
        dataset=root / "d.hdf5",
        out=root / "run",
        steps=3,
        batch_size=2,
        valid_every=0,
        threads=1,
    )
    cfg.model.dim, cfg.model.ttm.layers, cfg.model.ttm.memory_tokens = 32, 1, 8
    cfg.model.conv_channels, cfg.model.head_hidden = (8, 8, 16, 16), 32
    cfg.model.sample_actions = False  # the recipe samples; --sample must be able to say so
    train(cfg)
    return root / "run" / "checkpoints" / "last"


def run(checkpoint, out, **kw):
    return evaluate(EvalConfig(checkpoint=checkpoint, out=out, max_steps=30, **kw))


def test_eval_json_is_consistent_and_videos_play(checkpoint, tmp_path):
    r = run(checkpoint, tmp_path, episodes=5, envs=2, video=2)
    data = json.loads((tmp_path / "eval.json").read_text())
    assert data == json.loads(json.dumps(r))
    eps = data["per_episode"]
    assert [e["episode"] for e in eps] == list(range(5))
    assert [e["seed"] for e in eps] == [episode_seed(0, i) for i in range(5)]
    assert data["episodes_run"] == 5 and data["successes"] == sum(e["success"] for e in eps)
    assert data["success_rate"] == data["successes"] / 5
    assert [e["outcome"] == "success" for e in eps] == [e["success"] for e in eps]
    assert data["successes"] + data["failures"] + data["timeouts"] == 5
    k, n, z = data["successes"], 5, 1.96  # the Wilson score interval, written out here
    centre, half = (
        (k / n + z * z / (2 * n)),
        z * np.sqrt(k / n * (1 - k / n) / n + z * z / (4 * n * n)),
    )
    want = (
        max(0.0, (centre - half) / (1 + z * z / n)),
        min(1.0, (centre + half) / (1 + z * z / n)),
    )
    np.testing.assert_allclose(data["ci95_wilson"], want, atol=1e-12)
    assert data["lengths"] == [e["length"] for e in eps] and all(
        1 <= n <= 30 for n in data["lengths"]
    )
    assert data["policy_steps_per_s"] > 0 and data["env_steps_per_s"] > 0
    assert len(data["videos"]) == 2
    frames = imageio.mimread(data["videos"][0])
    assert len(frames) == eps[0]["length"] and frames[0].shape == (192, 192, 3)


def test_eval_json_records_the_gl_renderer(checkpoint, tmp_path):
    run(checkpoint, tmp_path, episodes=1)
    gl = json.loads((tmp_path / "eval.json").read_text())["gl"]
    # Read from a real context: llvmpipe on a CPU machine, the GPU's name on a GPU one.
    assert "error" not in gl and gl["renderer"] and gl["vendor"] and gl["version"], gl
    assert gl["backend"] == os.environ["MUJOCO_GL"].lower()
    assert gl["egl_devices"] == [None]  # a CPU policy: the envs render where EGL chooses


def test_same_seed_same_outcomes(checkpoint, tmp_path):
    a = run(checkpoint, tmp_path / "a", episodes=4, envs=2, seed=3)["per_episode"]
    b = run(checkpoint, tmp_path / "b", episodes=4, envs=2, seed=3)["per_episode"]
    c = run(checkpoint, tmp_path / "c", episodes=4, envs=1, seed=3)["per_episode"]
    assert a == b
    assert [(e["seed"], e["length"]) for e in a] == [(e["seed"], e["length"]) for e in c]


def test_sampling_is_recorded_and_seeded(checkpoint, tmp_path):
    """--actions sample / most-likely override the checkpoint's sample_actions, eval.json
    says which was used, and the draws follow --seed (the same seed, the same episodes)."""
    plain = run(checkpoint, tmp_path / "p", episodes=2)
    a = run(checkpoint, tmp_path / "a", episodes=2, seed=3, actions="sample")
    b = run(checkpoint, tmp_path / "b", episodes=2, seed=3, actions="sample")
    likely = run(checkpoint, tmp_path / "m", episodes=2, actions="most-likely")
    assert plain["sample_actions"] is False and a["sample_actions"] is True
    assert likely["sample_actions"] is False
    assert a["per_episode"] == b["per_episode"]


def test_mismatched_env_fails_at_once(checkpoint, tmp_path):
    with pytest.raises(EvalError, match="image_size"):
        run(checkpoint, tmp_path, episodes=1, env_kwargs='{"image_size": 32}')


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_bad_checkpoint_gives_one_clear_line(checkpoint, tmp_path, damage):
    bad = tmp_path / "ckpt"
    if damage == "corrupt":
        shutil.copytree(checkpoint, bad)
        (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    r = subprocess.run(
        [sys.executable, "-m", "eval.evaluate", "--checkpoint", str(bad), "--episodes", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ttm-eval: error:") and str(bad) in lines[0]
