"""LeRobotDataset v3 <-> robomimic-layout HDF5 (envs/lerobot_convert.py).

Two sources of LeRobot-written data, both made by LeRobot's own writer (lerobot 0.4.4,
tests/envs/lerobot_writer.py), never fetched:
- tests/fixtures/lerobot_v3_tiny, stored: read here without LeRobot, so these tests run in
  any checkout;
- a fresh dataset written by LeRobot in a subprocess under the LeRobot venv
  (scripts/lerobot_check.sh builds it; TTM_LEROBOT_PYTHON names its python), with the
  conversion back also done there (LeRobot's writer cannot be imported beside our CPU torch
  2.13: its torchvision needs a CUDA torch). Skipped, saying why, where there is no such venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from envs import lerobot_convert as lc
from envs.hdf5 import DemoWriter, demo_names, read_demo
from tests.envs import lerobot_writer as lw

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "lerobot_v3_tiny"
# Video (LeRobot's writer: h264, yuv420p, crf 30) of the smooth 24x32 test images: measured on
# the fixture, mean |error| 2.9-3.0 and max 14-16 grey levels of 255 (docs/lerobot.md).
VIDEO_MEAN_ABS_ERROR = 4.0
VIDEO_MAX_ABS_ERROR = 24

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _lerobot_python() -> str | None:
    candidates = [os.environ.get("TTM_LEROBOT_PYTHON"), REPO.parent / "lerobot_venv/bin/python"]
    for c in candidates:
        if c and Path(c).is_file():
            return str(c)
    return None


LEROBOT_PY = _lerobot_python()


def _run_lerobot(*args: str) -> str:
    """Run `python args...` under the LeRobot venv with this checkout first on the path."""
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    p = subprocess.run(
        [LEROBOT_PY, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, f"{args} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    return p.stdout


def _check_against_expected(h5: Path) -> None:
    """The HDF5 holds exactly lerobot_writer's values (video images within the codec error)."""
    with h5py.File(h5, "r") as f:
        names = demo_names(f)
        assert len(names) == len(lw.EPISODES)
        attr = json.loads(f["data"].attrs["lerobot"])
        assert attr["fps"] == lw.FPS and attr["robot_type"] == "test_robot"
        for e, name in enumerate(names):
            want = lw.expected_episode(e)
            d = read_demo(f, name)
            n = lw.EPISODES[e]
            assert d["attrs"]["num_samples"] == n
            # observation.state's names eef_pos_0.. gripper_qpos_1 split it back into keys
            state = np.concatenate([d["obs"]["eef_pos"], d["obs"]["gripper_qpos"]], axis=1)
            np.testing.assert_array_equal(state, want["observation.state"])
            np.testing.assert_array_equal(d["actions"], want["action"])
            assert d["actions"].dtype == np.float64
            np.testing.assert_array_equal(d["rewards"], want["next.reward"][:, 0])
            np.testing.assert_array_equal(d["dones"], want["next.done"][:, 0].astype(np.int64))
            # PNG (image feature): exact; layout HWC uint8
            np.testing.assert_array_equal(d["obs"]["wrist_image"], want["observation.images.wrist"])
            assert d["obs"]["wrist_image"].shape == (n, *lw.SIZE, 3)
            # video feature: the codec's error, frame for frame (a shifted frame would be far off)
            video = d["obs"]["front_image"].astype(np.int16)
            err = np.abs(video - want["observation.images.front"].astype(np.int16))
            assert err.mean() < VIDEO_MEAN_ABS_ERROR and err.max() <= VIDEO_MAX_ABS_ERROR, (
                e,
                err.mean(),
                err.max(),
            )
            tasks = [attr["tasks"][i] for i in f["data"][name]["task_index"][:]]
            assert tasks == list(want["task"])


def test_stored_lerobot_dataset_converts_to_hdf5_exactly(tmp_path):
    out = tmp_path / "from_lerobot.hdf5"
    summary = lc.lerobot_to_hdf5(FIXTURE, out)
    assert summary["episodes"] == 2 and summary["frames"] == sum(lw.EPISODES)
    _check_against_expected(out)


def test_converted_file_trains_through_our_data_layer(tmp_path):
    from train.data import load_demos

    out = tmp_path / "d.hdf5"
    lc.lerobot_to_hdf5(FIXTURE, out)
    keys = ("front_image", "wrist_image", "eef_pos", "gripper_qpos")
    demos = load_demos(out, keys, split="all")
    assert demos.obs_shapes["front_image"] == (*lw.SIZE, 3)
    assert demos.actions.shape == (sum(lw.EPISODES), 4)


def test_bad_input_fails_clearly(tmp_path):
    with pytest.raises(lc.ConvertError, match="no such directory"):
        lc.LeRobotReader(tmp_path / "nothing")
    old = tmp_path / "old"
    shutil.copytree(FIXTURE, old)
    info = json.loads((old / "meta/info.json").read_text())
    info["codebase_version"] = "v2.1"
    (old / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(lc.ConvertError, match="v2.1.*convert_dataset_v21_to_v30"):
        lc.LeRobotReader(old)
    info["codebase_version"] = "v3.0"
    del info["features"]["action"]
    (old / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(lc.ConvertError, match="no 'action' feature"):
        lc.LeRobotReader(old)
    out = tmp_path / "x.hdf5"
    out.write_text("")
    with pytest.raises(lc.ConvertError, match="exists; pass --overwrite"):
        lc.lerobot_to_hdf5(FIXTURE, out)


def test_cli_lerobot_to_hdf5(tmp_path):
    out = tmp_path / "cli.hdf5"
    p = subprocess.run(
        [sys.executable, "-m", "envs.lerobot_convert", "lerobot-to-hdf5", "--root", str(FIXTURE),
         "--out", str(out)],  # fmt: skip
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["frames"] == sum(lw.EPISODES)
    p = subprocess.run(
        [sys.executable, "-m", "envs.lerobot_convert", "lerobot-to-hdf5", "--root",
         str(tmp_path / "missing"), "--out", str(out)],  # fmt: skip
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (
        p.returncode == 2 and "ttm-convert: error:" in p.stderr and "no such directory" in p.stderr
    )


def _our_file(path: Path) -> None:
    """A small file as ttm-collect writes it: two cameras, three low-dim keys (object among
    them), 4-D actions, float64 values that float32 would round, masks and demo attrs."""
    rng = np.random.default_rng(7)
    env_args = {"env_name": "ttm/MW-reach-v0", "env_version": "x", "type": 2, "env_kwargs": {}}
    with DemoWriter(path, env_args) as w:
        for n in (5, 7, 4):
            demo = {
                "actions": rng.uniform(-1, 1, (n, 4)),
                "rewards": rng.normal(size=n),
                "dones": (np.arange(n) == n - 1).astype(np.int64),
                "states": rng.normal(size=(n, 6)),
                "obs": {
                    "corner_image": rng.integers(0, 256, (n, 12, 16, 3), dtype=np.uint8),
                    "wrist_image": rng.integers(0, 256, (n, 12, 16, 3), dtype=np.uint8),
                    "robot0_eef_pos": rng.normal(size=(n, 3)),
                    "robot0_gripper_qpos": rng.normal(size=(n, 2)),
                    "object": rng.normal(size=(n, 5)),
                },
            }
            w.add(demo, f"<mujoco n='{n}'/>", seed=int(n), success=True)
        w.finish(valid_fraction=0.34, seed=0)


def _assert_same_hdf5(a: Path, b: Path) -> None:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert json.loads(fa["data"].attrs["env_args"]) == json.loads(fb["data"].attrs["env_args"])
        assert demo_names(fa) == demo_names(fb)
        for m in ("train", "valid"):
            assert list(fa[f"mask/{m}"][:]) == list(fb[f"mask/{m}"][:])
        for name in demo_names(fa):
            da, db = read_demo(fa, name), read_demo(fb, name)
            for k in ("actions", "rewards", "dones", "states"):
                np.testing.assert_array_equal(da[k], db[k], err_msg=f"{name}/{k}")
                assert da[k].dtype == db[k].dtype
            assert sorted(da["obs"]) == sorted(db["obs"])
            for k in da["obs"]:
                np.testing.assert_array_equal(da["obs"][k], db["obs"][k], err_msg=f"{name}/obs/{k}")
            for k in ("seed", "success", "model_file", "num_samples"):
                assert da["attrs"][k] == db["attrs"][k], (name, k)


@pytest.fixture(scope="module")
def lerobot_work(tmp_path_factory):
    """One run of LeRobot (lerobot_writer.round_trips) under its venv; returns its folder."""
    if LEROBOT_PY is None:
        pytest.skip("no LeRobot venv (run scripts/lerobot_check.sh, or set TTM_LEROBOT_PYTHON)")
    work = tmp_path_factory.mktemp("lerobot")
    _our_file(work / "ours.hdf5")
    _run_lerobot("tests/envs/lerobot_writer.py", "--round-trips", str(work))
    return work


@pytest.mark.slow
def test_round_trip_ours_through_lerobot_is_exact(lerobot_work, tmp_path):
    """HDF5 -> LeRobot (LeRobot's writer, PNG images, float64) -> HDF5 keeps every value,
    the split and the demo attrs; LeRobot itself loads the intermediate dataset."""
    root, back = lerobot_work / "lr_ours", tmp_path / "back.hdf5"
    info = json.loads((root / "meta/info.json").read_text())
    assert info["fps"] == 80  # Meta-World's control rate, from the env class
    assert info["features"]["observation.state"]["names"] == [
        "robot0_eef_pos_0", "robot0_eef_pos_1", "robot0_eef_pos_2",
        "robot0_gripper_qpos_0", "robot0_gripper_qpos_1",
    ]  # fmt: skip
    assert "observation.environment_state" in info["features"]  # `object`, not proprio
    assert info["features"]["action"]["names"] == ["dx", "dy", "dz", "gripper"]
    loaded = json.loads((lerobot_work / "lr_ours.loaded.json").read_text())
    # LeRobot reads 16 frames in 3 episodes, images as CHW float
    assert loaded == {
        "frames": 16,
        "episodes": 3,
        "image": [3, 12, 16],
        "image_dtype": "torch.float32",
    }
    lc.lerobot_to_hdf5(root, back)
    _assert_same_hdf5(lerobot_work / "ours.hdf5", back)


@pytest.mark.slow
def test_round_trip_lerobot_through_ours(lerobot_work, tmp_path):
    """A dataset fresh from LeRobot's writer -> HDF5 -> LeRobot (LeRobot's writer, each camera
    as it came) -> HDF5: values as written (video within the codec's error), names, fps and
    tasks kept."""
    root, root2, h5b = lerobot_work / "lr_fresh", lerobot_work / "lr_fresh2", tmp_path / "b.hdf5"
    h5 = lerobot_work / "fresh.hdf5"
    _check_against_expected(h5)
    a = json.loads((root / "meta/info.json").read_text())
    b = json.loads((root2 / "meta/info.json").read_text())
    assert (a["fps"], a["robot_type"]) == (b["fps"], b["robot_type"])
    assert {k: (v["dtype"], v["shape"], v["names"]) for k, v in a["features"].items()} == {
        k: (v["dtype"], v["shape"], v["names"]) for k, v in b["features"].items()
    }
    lc.lerobot_to_hdf5(root2, h5b)
    with h5py.File(h5, "r") as fa, h5py.File(h5b, "r") as fb:
        for name in demo_names(fa):
            da, db = read_demo(fa, name), read_demo(fb, name)
            np.testing.assert_array_equal(da["actions"], db["actions"])
            for k in ("eef_pos", "gripper_qpos", "wrist_image"):
                np.testing.assert_array_equal(da["obs"][k], db["obs"][k])
            # the video was encoded a second time: within the codec's error again
            err = np.abs(da["obs"]["front_image"].astype(int) - db["obs"]["front_image"])
            assert err.mean() < VIDEO_MEAN_ABS_ERROR and err.max() <= VIDEO_MAX_ABS_ERROR
            np.testing.assert_array_equal(
                fa["data"][name]["task_index"][:], fb["data"][name]["task_index"][:]
            )


def test_hdf5_to_lerobot_without_lerobot_says_where_it_runs(tmp_path):
    try:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("LeRobot imports in this venv")
    src = tmp_path / "ours.hdf5"
    _our_file(src)
    with pytest.raises(lc.ConvertError, match="LeRobot venv.*lerobot_check.sh"):
        lc.hdf5_to_lerobot(src, tmp_path / "lr", repo_id="local/x")
