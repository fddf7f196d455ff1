"""Every bad demonstration file gives `ttm-train` one clear line and exit status 2, before
the first step: real HDF5 files written with h5py, broken in one way each, run through the
real command (`train.train.main`) with its default observation keys. Also `ttm-export` on a
checkpoint whose `env_args.json` is corrupt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from train.data import DatasetError, has_split, load_demos
from train.train import main
from ttm_policy.export import main as export_main

SIZE = 16  # image side: small, and the tiny conv stack (strides 2, 2, 2, 1) still fits
STEPS = 6  # steps per demo
TINY = [
    "--model.dim", "32", "--model.ttm.layers", "1", "--model.ttm.memory-tokens", "8",
    "--model.ttm.mlp-dim", "64", "--model.conv-channels", "8", "8", "8", "8",
    "--model.head-hidden", "32", "--threads", "1",
]  # fmt: skip
RUN = ["--steps", "1", "--batch-size", "2", "--valid-every", "1"]
RUN += ["--valid-batches", "1", "--log-every", "1", "--save-every", "1"]


def write_demos(path: Path, demos: int = 3) -> Path:
    """A small robomimic-layout file: demo_0..demo_{demos-1}, STEPS steps each, one camera and
    two low-dim keys; mask/train holds all demos but the last, mask/valid the last."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "PointCue", "env_kwargs": {}})
        for i in range(demos):
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = STEPS
            g["actions"] = rng.uniform(-1, 1, (STEPS, 7))
            obs = g.create_group("obs")
            obs["agentview_image"] = rng.integers(0, 256, (STEPS, SIZE, SIZE, 3), np.uint8)
            obs["robot0_eef_pos"] = rng.normal(size=(STEPS, 3))
            obs["robot0_gripper_qpos"] = rng.normal(size=(STEPS, 2))
        names = [f"demo_{i}".encode() for i in range(demos)]
        f.create_group("mask")
        f["mask/train"] = np.array(names[:-1])
        f["mask/valid"] = np.array(names[-1:])
    return path


def _replace(g: h5py.Group, key: str, value) -> None:
    del g[key]
    g[key] = value


# Each case breaks the good file in one way: (mutate(path), parts the one line must contain).


def _truncated(p):
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // 2])


def _text(p):
    p.write_text("demo_0,demo_1\n1,2\n")


def _empty(p):
    p.write_bytes(b"")


def _h5(fn):
    """A mutation that edits the file in place with h5py."""

    def mutate(p):
        with h5py.File(p, "r+") as f:
            fn(f)

    mutate.__name__ = fn.__name__
    return mutate


@_h5
def _data_is_a_dataset(f):
    del f["data"]
    f["data"] = np.zeros(3)


@_h5
def _obs_is_a_dataset_in_first_demo(f):
    _replace(f["data/demo_0"], "obs", np.zeros((STEPS, 3)))


@_h5
def _obs_is_a_dataset_in_later_demo(f):
    _replace(f["data/demo_1"], "obs", np.zeros((STEPS, 3)))


@_h5
def _obs_key_is_a_group(f):
    del f["data/demo_1/obs/robot0_eef_pos"]
    f["data/demo_1/obs"].create_group("robot0_eef_pos")


@_h5
def _actions_is_a_group(f):
    del f["data/demo_1/actions"]
    f["data/demo_1"].create_group("actions")


@_h5
def _env_args_is_a_number(f):
    f["data"].attrs["env_args"] = 3


@_h5
def _env_args_is_a_json_list(f):
    f["data"].attrs["env_args"] = "[1, 2]"


@_h5
def _num_samples_not_an_integer(f):
    f["data/demo_1"].attrs["num_samples"] = "six"


@_h5
def _unparseable_byte_string_actions(f):
    _replace(f["data/demo_1"], "actions", np.full((STEPS, 7), b"left"))


@_h5
def _byte_string_actions(f):
    _replace(f["data/demo_1"], "actions", np.full((STEPS, 7), b"0.5"))


@_h5
def _boolean_actions(f):
    _replace(f["data/demo_1"], "actions", np.ones((STEPS, 7), bool))


def _corrupt_compressed_chunk(p):
    """gzip-compressed low-dim data whose chunk bytes are overwritten: h5py fails on read."""
    with h5py.File(p, "r+") as f:
        g = f["data/demo_1/obs"]
        del g["robot0_eef_pos"]
        ds = g.create_dataset(
            "robot0_eef_pos", data=np.ones((STEPS, 3)), compression="gzip", chunks=(STEPS, 3)
        )
        info = ds.id.get_chunk_info(0)
    with p.open("r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * info.size)


@_h5
def _non_square_images(f):
    for i in range(3):
        _replace(
            f[f"data/demo_{i}/obs"],
            "agentview_image",
            np.zeros((STEPS, SIZE, SIZE + 4, 3), np.uint8),
        )


@_h5
def _nan_actions_in_valid_demo(f):
    f["data/demo_2/actions"][3, 2] = np.nan


@_h5
def _other_image_size_in_valid_demo(f):
    _replace(f["data/demo_2/obs"], "agentview_image", np.zeros((STEPS, 24, 24, 3), np.uint8))


@_h5
def _other_lowdim_width_in_valid_demo(f):
    _replace(f["data/demo_2/obs"], "robot0_eef_pos", np.zeros((STEPS, 4)))


@_h5
def _empty_mask_valid(f):
    _replace(f["mask"], "valid", np.array([], dtype="S8"))


@_h5
def _mask_valid_names_missing_demo(f):
    _replace(f["mask"], "valid", np.array([b"demo_7"]))


@_h5
def _mask_valid_is_a_group(f):
    del f["mask/valid"]
    f["mask"].create_group("valid")


@_h5
def _mask_is_a_dataset(f):
    del f["mask"]
    f["mask"] = np.array([b"demo_0"])


CASES = [
    (_truncated, ["not a readable HDF5 file", "truncated file"]),
    (_text, ["not a readable HDF5 file", "file signature not found"]),
    (_empty, ["not a readable HDF5 file"]),
    (_data_is_a_dataset, ["key 'data'", "is a dataset float64 (3,)", "group of demos"]),
    (_obs_is_a_dataset_in_first_demo, ["demo 'demo_0'", "key 'obs'", "is a dataset"]),
    (_obs_is_a_dataset_in_later_demo, ["demo 'demo_1'", "key 'obs'", "is a dataset"]),
    (_obs_key_is_a_group, ["demo 'demo_1'", "key 'robot0_eef_pos'", "is a group"]),
    (_actions_is_a_group, ["demo 'demo_1'", "key 'actions'", "got a group"]),
    (_env_args_is_a_number, ["attribute 'env_args'", "expected a JSON string", "3"]),
    (_env_args_is_a_json_list, ["attribute 'env_args'", "expected a JSON object", "list"]),
    (_num_samples_not_an_integer, ["demo 'demo_1'", "'num_samples'", "'six' is not an integer"]),
    (_unparseable_byte_string_actions, ["demo 'demo_1'", "key 'actions'", "|S4"]),
    (_byte_string_actions, ["demo 'demo_1'", "key 'actions'", "|S3"]),
    (_boolean_actions, ["demo 'demo_1'", "key 'actions'", "dataset bool"]),
    (_corrupt_compressed_chunk, ["demo 'demo_1'", "key 'robot0_eef_pos'", "cannot be read"]),
    (_non_square_images, ["demo 'demo_0'", "key 'agentview_image'", "16x20", "square"]),
    (_nan_actions_in_valid_demo, ["demo 'demo_2'", "key 'actions'", "NaN/Inf", "step 3"]),
    (
        _other_image_size_in_valid_demo,
        ["demo 'demo_2'", "key 'agentview_image'", "(24, 24, 3)", "training split"],
    ),
    (_other_lowdim_width_in_valid_demo, ["demo 'demo_2'", "key 'robot0_eef_pos'", "(4,)"]),
    (_empty_mask_valid, ["key 'mask/valid'", "is empty"]),
    (_mask_valid_names_missing_demo, ["key 'mask/valid'", "['demo_7']", "not in data/"]),
    (_mask_valid_is_a_group, ["key 'mask/valid'", "is a group"]),
    (_mask_is_a_dataset, ["key 'mask'", "is a dataset"]),
]


@pytest.mark.parametrize("mutate, expected", CASES, ids=[m.__name__[1:] for m, _ in CASES])
def test_bad_file_exits_2_with_one_line_naming_file_demo_key(tmp_path, capsys, mutate, expected):
    path = write_demos(tmp_path / "demos.hdf5")
    mutate(path)
    with pytest.raises(SystemExit) as exit_:
        main(["--dataset", str(path), "--out", str(tmp_path / "run"), *RUN, *TINY])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ttm-train: error: "), err
    assert str(path) in lines[0], err
    for part in expected:
        assert part in lines[0], err
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before the first step


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """One step of training on the unbroken file, validating at that step."""
    root = tmp_path_factory.mktemp("good")
    main(
        ["--dataset", str(write_demos(root / "demos.hdf5")), "--out", str(root / "run")]
        + RUN
        + TINY
    )
    return root / "run"


def test_the_unbroken_file_trains_and_validates(good_run):
    """The control: every failure above comes from its one mutation."""
    lines = [json.loads(ln) for ln in (good_run / "metrics.jsonl").read_text().splitlines()]
    assert "valid/loss" in lines[-1] and np.isfinite(lines[-1]["valid/loss"])


def test_no_mask_valid_trains_without_validation_and_says_so(tmp_path, capsys):
    path = write_demos(tmp_path / "demos.hdf5")
    with h5py.File(path, "r+") as f:
        del f["mask/valid"]
    assert not has_split(path, "valid") and has_split(path, "train")
    main(["--dataset", str(path), "--out", str(tmp_path / "run"), *RUN, *TINY])
    said = [ln for ln in capsys.readouterr().err.splitlines() if "mask/valid" in ln]
    assert len(said) == 1 and str(path) in said[0] and "no validation" in said[0], said
    lines = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines and not any("valid/loss" in ln for ln in lines)


def test_valid_split_must_match_the_training_split(tmp_path):
    """The loader-level check behind the valid-split cases: `like=` the training demos."""
    path = write_demos(tmp_path / "demos.hdf5")
    _other_image_size_in_valid_demo(path)
    keys = ("agentview_image", "robot0_eef_pos")
    train = load_demos(path, keys, "train")
    assert load_demos(path, keys, "valid").obs_shapes["agentview_image"] == (24, 24, 3)
    with pytest.raises(DatasetError, match=r"demo 'demo_2', key 'agentview_image'.*training split"):
        load_demos(path, keys, "valid", like=train)


@pytest.mark.parametrize(
    "content, expected",
    [("{oops", "not valid JSON"), ("[1, 2]", "expected a JSON object"), ("\xff", "not valid")],
    ids=["truncated", "list", "not-utf8"],
)
def test_export_with_corrupt_env_args_exits_2_with_one_line(
    good_run, tmp_path, capsys, content, expected
):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(good_run / "checkpoints" / "last", ckpt)
    assert json.loads((ckpt / "env_args.json").read_text())["env_name"] == "PointCue"
    (ckpt / "env_args.json").write_bytes(content.encode("latin-1"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        export_main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "export")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(ckpt / "env_args.json") in lines[0] and expected in lines[0]
    assert not (tmp_path / "export").exists()
