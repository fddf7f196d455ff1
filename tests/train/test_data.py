"""Data layer on real HDF5: the robomimic fixture, and broken copies of it written with h5py."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from tests.conftest import ROBOMIMIC_FIXTURE as FIXTURE
from train.data import (
    LIFT_OBS_KEYS,
    ChunkDataset,
    DataConfig,
    DatasetError,
    EpisodeDataset,
    EpisodeStreams,
    StepBatchSampler,
    compute_stats,
    load_demos,
    make_dataset,
    trim_padding,
)

LOW_DIM = ("robot0_eef_pos", "robot0_gripper_qpos")


@pytest.fixture(scope="module")
def train_demos():
    return load_demos(FIXTURE, LIFT_OBS_KEYS, "train")


@pytest.fixture
def copy(tmp_path):
    """A writable copy of the fixture (copyfile: the original is read-only)."""
    dst = tmp_path / "lift.hdf5"
    shutil.copyfile(FIXTURE, dst)
    return dst


def _replace(g: h5py.Group, key: str, value: np.ndarray) -> None:
    del g[key]
    g.create_dataset(key, data=value)


# --------------------------------------------------------------------------- reading


def test_reads_robomimic_fixture(train_demos):
    d = train_demos
    assert d.names == ["demo_2", "demo_3"]  # train mask; names do not start at demo_0
    assert d.lengths.tolist() == [42, 44] and d.offsets.tolist() == [0, 42]
    assert set(d.obs) == set(LIFT_OBS_KEYS)  # extra keys (object, joints, ...) are not loaded
    assert (
        d.obs_shapes["agentview_image"] == (84, 84, 3)
        and d.obs["agentview_image"].dtype == np.uint8
    )
    assert d.obs_shapes["robot0_eef_quat"] == (4,) and d.action_dim == 7
    assert d.env_args["env_name"] == "Lift"
    with h5py.File(FIXTURE, "r") as f:
        g = f["data/demo_3"]
        assert g["obs/robot0_eef_pos"].dtype == np.float64  # on disk ...
        obs, actions = d.episode(1)
        assert (
            obs["robot0_eef_pos"].dtype == np.float32 and actions.dtype == np.float32
        )  # ... in RAM
        np.testing.assert_array_equal(
            obs["robot0_eef_pos"], g["obs/robot0_eef_pos"][()].astype(np.float32)
        )
        np.testing.assert_array_equal(
            obs["robot0_eye_in_hand_image"], g["obs/robot0_eye_in_hand_image"][()]
        )
        np.testing.assert_array_equal(actions, g["actions"][()].astype(np.float32))


def test_split_from_mask():
    assert load_demos(FIXTURE, LOW_DIM, "valid").names == ["demo_4"]
    assert load_demos(FIXTURE, LOW_DIM, "all").names == ["demo_2", "demo_3", "demo_4"]


def test_no_mask_warns_and_uses_all_demos(copy):
    with h5py.File(copy, "r+") as f:
        del f["mask"]
    with pytest.warns(UserWarning, match="no mask/train.*ALL 3 demos"):
        assert load_demos(copy, LOW_DIM, "train").names == ["demo_2", "demo_3", "demo_4"]


def test_demos_sorted_by_numeric_suffix(copy):
    with h5py.File(copy, "r+") as f:
        f["data"].move("demo_4", "demo_10")
        f["data"].move("demo_3", "demo_9")
    d = load_demos(copy, LOW_DIM, "all")
    assert d.names == ["demo_2", "demo_9", "demo_10"]
    assert d.lengths.tolist() == [42, 44, 44]


# --------------------------------------------------------------------------- sampling


def test_episode_sampling(train_demos):
    """Every sample is one whole episode from its first step (training never starts mid-episode,
    where a rollout would carry memory), padded past its end with its last frame."""
    d = train_demos
    ds = EpisodeDataset(d)
    assert len(ds) == 2 and ds.max_len == 44
    first = ds[0]  # demo_2, 42 steps
    assert (first["demo"].item(), first["start"].item()) == (0, 0)
    img = first["obs"]["agentview_image"]
    assert img.shape == (44, 84, 84, 3) and img.dtype == torch.uint8
    assert first["obs"]["robot0_eef_pos"].shape == (44, 3) and first["actions"].shape == (44, 7)
    assert first["is_first"].tolist() == [True] + [False] * 43
    assert first["mask"].tolist() == [True] * 42 + [False] * 2
    obs, actions = d.episode(0)
    np.testing.assert_array_equal(
        first["obs"]["robot0_eef_pos"].numpy()[:42], obs["robot0_eef_pos"]
    )
    np.testing.assert_array_equal(first["actions"].numpy()[:42], actions)
    np.testing.assert_array_equal(
        first["obs"]["agentview_image"].numpy()[42:], np.repeat(obs["agentview_image"][-1:], 2, 0)
    )
    np.testing.assert_array_equal(first["actions"].numpy()[42:], np.repeat(actions[-1:], 2, 0))
    second = ds[1]  # demo_3, 44 steps: no padding
    obs, _ = d.episode(1)
    assert second["mask"].all() and second["is_first"][0] and not second["is_first"][1:].any()
    np.testing.assert_array_equal(
        second["obs"]["robot0_eye_in_hand_image"].numpy(), obs["robot0_eye_in_hand_image"]
    )
    # every sample carries its episode's last low-dim values (hindsight goal), never images
    for e in (0, 1):
        final = ds[e]["final"]
        assert set(final) == {k for k in d.obs if not k.endswith("_image")}
        np.testing.assert_array_equal(
            final["robot0_eef_pos"].numpy(), d.episode(e)[0]["robot0_eef_pos"][-1]
        )


def test_action_chunks(train_demos):
    d, K = train_demos, 4
    item = EpisodeDataset(d, action_horizon=K)[0]  # demo_2: steps 0..41 real, 42..43 padding
    _, actions = d.episode(0)
    assert item["actions"].shape == (44, K, 7) and item["action_mask"].shape == (44, K)
    for t in range(36, 44):
        for j in range(K):
            step = t + j
            assert item["action_mask"][t, j].item() == (step < 42)
            np.testing.assert_array_equal(item["actions"][t, j].numpy(), actions[min(step, 41)])


def test_trim_padding_cuts_a_batch_to_its_longest_episode(train_demos):
    ds = EpisodeDataset(train_demos, max_len=50)  # padded past every episode
    both = default_collate([ds[0], ds[1]])
    assert both["mask"].shape == (2, 50)
    cut = trim_padding(both)
    assert cut["mask"].shape == (2, 44) and cut["mask"].sum().item() == 42 + 44
    assert cut["obs"]["agentview_image"].shape == (2, 44, 84, 84, 3)
    assert cut["actions"].shape == (2, 44, 7) and cut["is_first"].shape == (2, 44)
    for k, v in both["final"].items():  # per episode, not per step: untouched
        assert torch.equal(cut["final"][k], v)
    assert torch.equal(cut["obs"]["robot0_eef_pos"], both["obs"]["robot0_eef_pos"][:, :44])
    short = trim_padding(default_collate([ds[0]]))  # demo_2 alone: 42 steps
    assert short["mask"].shape == (1, 42) and short["mask"].all()
    chunks = trim_padding(default_collate([EpisodeDataset(train_demos, action_horizon=3)[0]]))
    assert chunks["actions"].shape == (1, 42, 3, 7) and chunks["action_mask"].shape == (1, 42, 3)


def test_episode_mode_pads_to_longest(train_demos):
    ds = EpisodeDataset(train_demos)
    assert len(ds) == 2 and ds.max_len == 44
    batch = next(iter(DataLoader(ds, batch_size=2)))  # default_collate
    assert batch["obs"]["agentview_image"].shape == (2, 44, 84, 84, 3)
    assert batch["actions"].shape == (2, 44, 7)
    assert batch["mask"].sum(1).tolist() == [42, 44]
    assert batch["is_first"][:, 0].all() and not batch["is_first"][:, 1:].any()
    assert batch["demo"].tolist() == [0, 1] and batch["start"].tolist() == [0, 0]
    np.testing.assert_array_equal(  # padding repeats the last frame: it is the final value
        batch["final"]["robot0_eef_pos"].numpy(), batch["obs"]["robot0_eef_pos"][:, -1].numpy()
    )


def test_make_dataset_from_config(train_demos):
    cfg = DataConfig(path=str(FIXTURE), action_horizon=2)
    ds = make_dataset(cfg, train_demos)
    assert isinstance(ds, EpisodeDataset) and ds[0]["actions"].shape == (44, 2, 7)


def test_config_validation_says_how_to_fix():
    with pytest.raises(ValueError, match="--data.path"):
        DataConfig(path="")
    with pytest.raises(ValueError, match="more than once"):
        DataConfig(path="x.hdf5", obs_keys=("robot0_eef_pos", "robot0_eef_pos"))
    with pytest.raises(ValueError, match="action_horizon=-1"):
        DataConfig(path="x.hdf5", action_horizon=-1)


def test_stats_match_numpy(train_demos):
    stats = compute_stats(train_demos)
    assert "obs/agentview_image/mean" not in stats
    with h5py.File(FIXTURE, "r") as f:
        for key, name in (("obs/robot0_eef_quat", "obs/robot0_eef_quat"), ("actions", "action")):
            x = np.concatenate(
                [f[f"data/{demo}/{key}"][()] for demo in ("demo_2", "demo_3")]
            )  # float64
            for stat, fn in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max)):
                got = stats[f"{name}/{stat}"]
                assert got.dtype == np.float32 and got.shape == (x.shape[1],)
                np.testing.assert_allclose(got, fn(x, axis=0), rtol=1e-5, atol=1e-7)


def test_step_batch_sampler_shards_and_resumes():
    n, B, w = 50, 4, 3
    single = StepBatchSampler(n, B * w, seed=7)
    ranks = [StepBatchSampler(n, B, rank=r, world_size=w, seed=7) for r in range(w)]
    for step in (0, 3, 4, 9):  # step 4 crosses an epoch boundary (48 -> 60)
        shards = [s.batch(step) for s in ranks]
        assert sum(shards, []) == single.batch(step)
        assert len(set(sum(shards, []))) == B * w  # disjoint across ranks
    epoch0 = sum((single.batch(s) for s in range(4)), [])[:n] + single.batch(4)[:2]
    assert sorted(epoch0) == list(range(n))  # each epoch visits every index once
    resumed = iter(StepBatchSampler(n, B, rank=1, world_size=w, seed=7, start_step=5))
    assert next(resumed) == ranks[1].batch(5)


def test_episode_streams_read_each_episode_in_consecutive_pieces():
    lengths = np.array([30, 17, 50, 8, 41, 23, 64])
    C, B, w = 16, 2, 2
    single = EpisodeStreams(lengths, B * w, C, seed=3)
    ranks = [EpisodeStreams(lengths, B, C, rank=r, world_size=w, seed=3) for r in range(w)]
    history = [single.batch(s) for s in range(40)]
    for step in (0, 5, 17, 39):  # rank r holds lanes r*B .. r*B+B-1 of the single process
        assert sum((r.batch(step) for r in ranks), []) == history[step]
    for lane in range(B * w):
        pieces = [h[lane] for h in history]
        for (e0, s0), (e1, s1) in zip(pieces, pieces[1:]):
            if s1:  # a lane continues its episode piece by piece, from step 0
                assert (e1, s1) == (e0, s0 + C)
            else:  # or takes the next one once every step of this one was read
                assert s0 + C >= lengths[e0]
        assert pieces[0][1] == 0
    # Episodes come in StepBatchSampler's order: every episode once per epoch.
    firsts = [e for h in history for (e, s) in h if s == 0]
    assert sorted(firsts[: len(lengths)]) == list(range(len(lengths)))
    # Resume: a new sampler at step 17 yields what the running one did.
    assert next(
        iter(EpisodeStreams(lengths, B, C, rank=1, world_size=w, seed=3, start_step=17))
    ) == (ranks[1].batch(17))
    assert ranks[0].batch(2) == history[2][:B]  # an earlier step replays from step 0


def test_episode_streams_equal_whole_episode_batches_when_episodes_fit_in_a_piece(train_demos):
    longest = int(train_demos.lengths.max())
    streams = EpisodeStreams(train_demos.lengths, 3, longest, seed=5)
    whole = StepBatchSampler(len(train_demos.names), 3, seed=5)
    pieces, episodes = ChunkDataset(train_demos, longest), EpisodeDataset(train_demos)
    for step in range(4):
        assert [e for e, _ in streams.batch(step)] == whole.batch(step)
        a = trim_padding(default_collate([pieces[i] for i in streams.batch(step)]))
        b = trim_padding(default_collate([episodes[i] for i in whole.batch(step)]))
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    piece = pieces[(0, 8)]  # a later piece: not an episode start, padded past the end
    n = int(train_demos.lengths[0])
    assert not piece["is_first"].any() and piece["mask"].sum() == min(longest, n - 8)
    np.testing.assert_array_equal(piece["actions"][0], train_demos.episode(0)[1][8])


# --------------------------------------------------------------------------- validation errors


def _nan_obs(f):
    f["data/demo_3/obs/robot0_eef_pos"][5, 1] = np.nan


def _inf_action(f):
    f["data/demo_3/actions"][2, 0] = np.inf


def _out_of_range_action(f):
    f["data/demo_2/actions"][7, 1] = 1.5


def _missing_key(f):
    del f["data/demo_3/obs/robot0_gripper_qpos"]


def _float_image(f):
    g = f["data/demo_2/obs"]
    _replace(g, "agentview_image", g["agentview_image"][()].astype(np.float32) / 255)


def _rgba_image(f):
    g = f["data/demo_2/obs"]
    _replace(g, "agentview_image", np.zeros((42, 84, 84, 4), np.uint8))


def _short_obs(f):
    g = f["data/demo_4/obs"]
    _replace(g, "robot0_eef_pos", g["robot0_eef_pos"][:-1])


def _empty_demo(f):
    g = f["data/demo_3"]
    _replace(g, "actions", np.zeros((0, 7)))
    for key in list(g["obs"]):
        _replace(g["obs"], key, g["obs"][key][:0])
    g.attrs["num_samples"] = 0


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (_nan_obs, ["demo 'demo_3'", "key 'robot0_eef_pos'", "NaN/Inf", "step 5"]),
        (_inf_action, ["demo 'demo_3'", "key 'actions'", "NaN/Inf", "step 2"]),
        (
            _out_of_range_action,
            ["demo 'demo_2'", "key 'actions'", "outside [-1, 1]", "step 7, dim 1: 1.5"],
        ),
        (
            _missing_key,
            ["demo 'demo_3'", "key 'robot0_gripper_qpos'", "available obs keys", "robot0_eef_pos"],
        ),
        (_float_image, ["demo 'demo_2'", "key 'agentview_image'", "expected uint8", "float32"]),
        (
            _rgba_image,
            ["demo 'demo_2'", "key 'agentview_image'", "expected uint8", "(42, 84, 84, 4)"],
        ),
        (_short_obs, ["demo 'demo_4'", "key 'robot0_eef_pos'", "43 observations but 44 actions"]),
        (_empty_demo, ["demo 'demo_3'", "key 'actions'", "empty demo"]),
    ],
    ids=lambda v: v.__name__[1:] if callable(v) else "msg",
)
def test_bad_file_errors_name_file_demo_key(copy, mutate, expected):
    with h5py.File(copy, "r+") as f:
        mutate(f)
    with pytest.raises(DatasetError) as err:
        load_demos(copy, ("agentview_image", "robot0_eef_pos", "robot0_gripper_qpos"), "all")
    msg = str(err.value)
    assert str(copy) in msg
    for part in expected:
        assert part in msg, msg


def test_unreadable_and_malformed_files(tmp_path):
    text = tmp_path / "notes.hdf5"
    text.write_text("this is not HDF5\n")
    with pytest.raises(DatasetError, match=rf"{text}: not a readable HDF5 file"):
        load_demos(text, LOW_DIM)
    with pytest.raises(DatasetError, match="no such file"):
        load_demos(tmp_path / "missing.hdf5", LOW_DIM)
    no_data = tmp_path / "no_data.hdf5"
    with h5py.File(no_data, "w") as f:
        f.create_group("mask")
    with pytest.raises(
        DatasetError, match=rf"{no_data}: no 'data' group; top-level keys are \['mask'\]"
    ):
        load_demos(no_data, LOW_DIM)


def test_mask_naming_unknown_demo_and_too_short_max_len(copy, train_demos):
    with h5py.File(copy, "r+") as f:
        del f["mask/valid"]
        f["mask"].create_dataset("valid", data=np.array([b"demo_4", b"demo_7"]))
    with pytest.raises(
        DatasetError, match=r"mask/valid names demos \['demo_7'\] that are not in data/"
    ):
        load_demos(copy, LOW_DIM, "valid")
    with pytest.raises(DatasetError, match="44 steps exceed max_len=40"):
        EpisodeDataset(train_demos, max_len=40)
