"""ttm-collect: robomimic layout, replay from the file, workers, interruption, bad input."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from envs.collect import Args, UsageError, collect
from envs.env_args import make_from_env_args
from envs.hdf5 import demo_names, read_demo, read_env_args
from tests.conftest import ROBOMIMIC_FIXTURE as FIXTURE

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("collect") / "point_cue.hdf5"
    summary = collect(Args(task="PointCue", out=out, episodes=4, seed=1, valid_fraction=0.25))
    return out, summary


def test_file_layout_matches_robomimic(dataset):
    out, summary = dataset
    assert {p.name for p in out.parent.iterdir()} == {out.name, f"{out.name}.summary.json"}
    with h5py.File(out) as f:
        names = demo_names(f)
        assert names == [f"demo_{i}" for i in range(4)]
        total = 0
        for name in names:
            g = f[f"data/{name}"]
            n = g.attrs["num_samples"]
            total += n
            assert g["actions"].shape == (n, 7) and g["actions"].dtype == np.float64
            assert g["rewards"].shape == (n,) and g["dones"].shape == (n,)
            assert (
                g["dones"].dtype == np.int64 and g["dones"][-1] == 1 and g["dones"][:-1].sum() == 0
            )
            assert g["states"].shape == (n, 7)
            img = g["obs/agentview_image"]
            assert img.shape == (n, 48, 48, 3) and img.dtype == np.uint8
            assert img.compression == "gzip" and img.chunks == (1, 48, 48, 3)
            assert g["obs/robot0_eef_pos"].shape == (n, 3)
            assert "<mujoco" in g.attrs["model_file"]
        assert f["data"].attrs["total"] == total == summary["samples_kept"]
        train, valid = demo_names(f, "train"), demo_names(f, "valid")
        assert f["mask/train"].dtype.kind == "S" and len(valid) == 1
        assert sorted(train + valid) == names
        # The same types robomimic's own tools write (a real robomimic file, read the same way).
        with h5py.File(FIXTURE) as ref:
            ours, theirs = f["data/demo_0"], ref[f"data/{demo_names(ref)[0]}"]
            for key in ("actions", "rewards", "dones", "states", "obs/agentview_image"):
                assert ours[key].dtype == theirs[key].dtype, key
            for key in ("num_samples", "model_file"):
                assert type(ours.attrs[key]) is type(theirs.attrs[key]), key
            assert ref["mask/train"].dtype.kind == f["mask/train"].dtype.kind
            assert type(ref["data"].attrs["total"]) is type(f["data"].attrs["total"])
            assert isinstance(f["data"].attrs["env_args"], str)
    saved = json.loads(Path(f"{out}.summary.json").read_text())
    assert saved["episodes_tried"] == saved["episodes_kept"] == 4
    assert saved["expert_success_rate"] == 1.0 and saved["file_size_bytes"] == out.stat().st_size


def test_replay_from_file_reproduces_observations_and_success(dataset):
    out, _ = dataset
    with h5py.File(out) as f:
        env = make_from_env_args(read_env_args(f))
        for name in demo_names(f):
            demo = read_demo(f, name)
            env.reset(seed=int(demo["attrs"]["seed"]))
            u = env.unwrapped
            u.set_sim_state(demo["states"][0])
            replay(env, demo, u.get_obs(), name)
        env.close()


def replay(env, demo, obs, name=""):
    """Step `env` (at the demo's first state, showing `obs`) through the demo's actions and
    check every state, observation and reward against the file, and the stored success.
    Also used by the other tasks' collection tests."""
    u = env.unwrapped
    for t, action in enumerate(demo["actions"]):
        np.testing.assert_array_equal(u.get_sim_state(), demo["states"][t])
        for key, value in demo["obs"].items():
            assert np.array_equal(obs[key], value[t]), f"{name} obs/{key} step {t}"
        obs, reward, terminated, truncated, info = env.step(action)
        assert reward == demo["rewards"][t]
    assert terminated and info["success"] == bool(demo["attrs"]["success"]) is True


def test_workers_give_the_same_dataset(tmp_path, dataset):
    ref, _ = dataset
    out = tmp_path / "w2.hdf5"
    collect(Args(task="PointCue", out=out, episodes=4, seed=1, valid_fraction=0.25, workers=2))
    with h5py.File(ref) as a, h5py.File(out) as b:
        assert demo_names(a) == demo_names(b)
        assert list(a["mask/valid"][:]) == list(b["mask/valid"][:])
        for name in demo_names(a):
            da, db = read_demo(a, name), read_demo(b, name)
            for key in ("actions", "states", "rewards"):
                np.testing.assert_array_equal(da[key], db[key])
            for key in da["obs"]:
                np.testing.assert_array_equal(da["obs"][key], db["obs"][key])


def test_paired_cues_record_each_scene_once_per_cue(tmp_path):
    out = tmp_path / "paired.hdf5"
    collect(Args(task="PointCue", out=out, episodes=4, seed=1, paired_cues=True))
    with h5py.File(out) as f:
        demos = [read_demo(f, name) for name in demo_names(f)]
        env = make_from_env_args(read_env_args(f))
    assert [int(d["attrs"]["cue"]) for d in demos] == [0, 1, 0, 1]
    seeds = [int(d["attrs"]["seed"]) for d in demos]
    assert seeds[0] == seeds[1] != seeds[2] == seeds[3]
    cue_steps = env.unwrapped.cue_steps
    env.close()
    for a, b in (demos[:2], demos[2:]):
        # The same scene: equal start state but for the cue (its last entry), and once the cue
        # is gone, equal images until the point moves; only the actions tell the pair apart.
        np.testing.assert_array_equal(a["states"][0][:-1], b["states"][0][:-1])
        assert (a["states"][0][-1], b["states"][0][-1]) == (0, 1)
        image_a, image_b = a["obs"]["agentview_image"], b["obs"]["agentview_image"]
        assert not np.array_equal(image_a[0], image_b[0])  # the cue differs
        np.testing.assert_array_equal(image_a[cue_steps], image_b[cue_steps])
        assert not np.allclose(a["actions"][-1], b["actions"][-1])


def test_paired_cues_need_a_task_with_a_cue(tmp_path):
    with pytest.raises(UsageError, match="--paired-cues needs a memory task with a cue; Lift"):
        collect(Args(task="Lift", out=tmp_path / "lift.hdf5", episodes=2, paired_cues=True))
    assert list(tmp_path.iterdir()) == []


def test_failures_are_dropped_unless_kept(tmp_path):
    # 5 + 10 held steps leave 3 moving steps: too few to reach a pad, so every episode fails.
    short = dict(task="PointCue", episodes=2, env_kwargs='{"max_steps": 18}')
    with pytest.raises(UsageError, match="none of 2 episodes"):
        collect(Args(out=tmp_path / "none.hdf5", **short))
    assert list(tmp_path.iterdir()) == []
    summary = collect(Args(out=tmp_path / "kept.hdf5", keep_failures=True, **short))
    assert summary["episodes_kept"] == 2 and summary["expert_success_rate"] == 0.0
    with h5py.File(tmp_path / "kept.hdf5") as f:
        assert not f["data/demo_0"].attrs["success"]
        assert f["data/demo_0/actions"].shape == (18, 7)


def test_interrupted_run_leaves_no_file_under_the_output_name(tmp_path):
    out = tmp_path / "big.hdf5"
    cmd = [sys.executable, "-m", "envs.collect", "--task", "PointCue", "--episodes", "100000"]
    proc = subprocess.Popen([*cmd, "--out", str(out)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):  # writing started
            assert proc.poll() is None and time.monotonic() < deadline, "collection never started"
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("collect PointCue:")]
    assert lines == ["ttm-collect: interrupted by SIGTERM; no output written"]  # and the bar
    assert list(tmp_path.iterdir()) == []  # no output, no summary, temp file removed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--task", "Nope"], "unknown task 'Nope'"),
        (["--cameras", "robot0_eye_in_hand"], "unknown camera(s) 'robot0_eye_in_hand'"),
        (["--episodes", "0"], "--episodes must be positive"),
        (["--workers", "-2"], "--workers must be positive"),
        (["--out", "{existing}/x/demos.hdf5"], "existing.hdf5 is not a directory"),
        (["--out", "{existing}"], "exists; pass --overwrite"),
        (["--paired-cues"], "--episodes must be a multiple of 2; got 1"),
    ],
)
def test_bad_input_exits_with_one_clear_line(tmp_path, argv, message):
    existing = tmp_path / "existing.hdf5"
    existing.write_bytes(b"keep me")
    argv = [a.replace("{existing}", str(existing)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "demos.hdf5")]
    if "--task" not in argv:
        argv += ["--task", "PointCue"]
    cmd = [sys.executable, "-m", "envs.collect", "--episodes", "1", *argv]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ttm-collect: error: "), res.stderr
    assert message in lines[0]
    assert existing.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.hdf5"]


def test_console_script_writes_a_dataset(tmp_path):
    """The installed `ttm-collect` script, run from another directory on a tiny budget,
    writes the file and summary it reports."""
    assert 'ttm-collect = "envs.collect:main"' in (ROOT / "pyproject.toml").read_text()
    script = Path(sys.executable).parent / "ttm-collect"  # made from pyproject at install
    out = tmp_path / "cli" / "demos.hdf5"
    args = ["--task", "PointCue", "--episodes", "2", "--seed", "3", "--valid-fraction", "0.5"]
    res = subprocess.run(
        [str(script), *args, "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    with h5py.File(out) as f:
        assert demo_names(f) == ["demo_0", "demo_1"]
        assert len(demo_names(f, "train")) == len(demo_names(f, "valid")) == 1
        steps = int(f["data"].attrs["total"])
        assert steps == sum(f[f"data/{n}"].attrs["num_samples"] for n in demo_names(f))
    summary = json.loads(Path(f"{out}.summary.json").read_text())
    assert summary["episodes_kept"] == 2 and summary["samples_kept"] == steps
    first, second = res.stdout.strip().splitlines()
    assert first.startswith(f"PointCue: kept 2/2 episodes (expert success 100.0%), {steps} steps")
    assert second.startswith(f"wrote {out} (") and "1 train / 1 valid demos" in second
