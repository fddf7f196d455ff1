"""Demonstration data for behaviour cloning: robomimic-format HDF5 -> RAM -> torch batches.

Dimension legend: E episodes (demos), N steps of one episode, T steps of one sample (the
longest episode; `trim_padding` cuts a batch to its own longest), K action-chunk length, H, W image size,
D low-dim width, A action width (7 for OSC_POSE + gripper), B batch.

File layout read (robomimic's; see ../shared/DESIGN.md):

    data                    attrs total, env_args (JSON)
    data/demo_<i>           attrs num_samples, model_file
    data/demo_<i>/actions   (N, A)            float, in [-1, 1]
    data/demo_<i>/obs/<key> (N, H, W, 3) uint8 for `<camera>_image`, (N, D) float otherwise
    mask/train, mask/valid  demo names as bytes

Every problem with a file is a `DatasetError` whose one-line message names the file, and the
demo and key where there is one; h5py's own errors on a truncated or corrupt file included.
A split without its mask reads every demo (with a warning); a mask that is empty or names a
demo that is not in data/ is an error. (`ttm-train` validates on mask/valid, checked before
the first step; without one it says so in one line and does not validate.)

Everything else in a demo (rewards, dones, states, action_dict, extra obs keys) is ignored.
Demos are sorted by their numeric suffix (demo_2 < demo_10) and their arrays concatenated
along time into one array per key, decoded once (images stay uint8, low-dim and actions
become float32). Every sample is then a fancy-index into those arrays.

A sample is one whole episode from its first step (`EpisodeDataset`), or a piece of
`chunk` consecutive steps of one (`ChunkDataset`, indexed by `EpisodeStreams`, which has every
batch row read its episode piece after piece while the trainer carries the row's memory from
one piece to the next); `default_collate` adds B in front. Either way the memory a policy
holds at step t is the memory of steps 0..t-1 of the same episode, as in a rollout (see
`ttm_policy.policy.TTMPolicy.sequence_features`; pieces and `PolicyConfig.bptt` truncate the
gradient, not the memory). The 10-step windows with a memory reset at every window start that
earlier versions trained on are gone: inference never made that reset.

    obs/<camera>_image  (T, H, W, 3) uint8   not normalised, not cropped (the model does that)
    obs/<low-dim key>   (T, D)       float32 raw (normalise with `compute_stats`)
    actions             (T, A)       float32, or (T, K, A) when action_horizon K > 0
    action_mask         (T, K)       bool, only when action_horizon K > 0
    mask                (T,)         bool  True on real steps, False on padding
    is_first            (T,)         bool  True exactly on an episode's first step
    final/<low-dim key> (D,)         float32 raw value at the episode's last step (hindsight goal)
    demo, start         ()           int64 demo index (into `Demos.names`) and first step
    task                ()           int64 the episode's task (index into `Demos.tasks`), only
                                     when the demos come from several tasks (`merge_demos`)

Several tasks (a multi-task policy): `merge_demos` joins the demos of several files into one
`Demos`, each episode tagged with its task, named from its file's env_args (`task_name`); the
samplers then draw from all of them, so batches mix tasks, and `compute_stats` covers them all.

Padding past an episode's end repeats its last frame and last action, with mask False.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ttm_policy.config import LIFT_OBS_KEYS, check_obs_keys  # noqa: F401 - re-exported


class DatasetError(ValueError):
    """A demonstration file that cannot be used; the message names file, demo and key."""


def is_image_key(key: str) -> bool:
    """robomimic's convention: `<camera>_image` is an RGB image, every other key is low-dim."""
    return key.endswith("_image")


# --------------------------------------------------------------------------- config


@dataclass
class DataConfig:
    """Which demonstrations to read and how to cut them into training samples."""

    path: str
    """robomimic-format HDF5 file (written by `ttm-collect` or by robomimic's tools). Required;
    its existence is checked when loading, not here (a saved config may travel without it)."""
    obs_keys: tuple[str, ...] = LIFT_OBS_KEYS
    """Observation keys the policy consumes: `<camera>_image` (uint8 HxWx3) and low-dim keys."""
    split: Literal["train", "valid", "all"] = "train"
    """Demos listed in `mask/<split>`; `all` (or a file without that mask) uses every demo."""
    action_horizon: int = 0
    """K > 0: `actions` becomes (T, K, A), the K actions from each step on (action chunking),
    with `action_mask` (T, K). 0: one action per step, `actions` (T, A)."""

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError(
                "DataConfig.path is empty: pass the demonstration file, e.g. --data.path demos.hdf5"
            )
        self.obs_keys = tuple(self.obs_keys)
        check_obs_keys(self.obs_keys, "DataConfig.obs_keys")
        if self.split not in ("train", "valid", "all"):
            raise ValueError(f"DataConfig.split={self.split!r}: use 'train', 'valid' or 'all'")
        if self.action_horizon < 0:
            raise ValueError(
                f"DataConfig.action_horizon={self.action_horizon}: use 0 (no chunks) or K >= 1"
            )


# --------------------------------------------------------------------------- loading


@dataclass
class Demos:
    """Demonstrations of one split, decoded into RAM; demo e spans rows
    `offsets[e] : offsets[e] + lengths[e]` of every array."""

    path: str
    names: list[str]  # E demo names, sorted by numeric suffix
    lengths: np.ndarray  # (E,) int64
    offsets: np.ndarray  # (E,) int64
    obs: dict[str, np.ndarray]  # key -> (sum N, H, W, 3) uint8 | (sum N, D) float32
    actions: np.ndarray  # (sum N, A) float32
    env_args: dict[str, Any] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Several tasks (`merge_demos`): task name -> its env_args, in index order; empty for
    the demos of one file."""
    task_ids: np.ndarray | None = None
    """(E,) int64: each demo's task, an index into `tasks`; None for the demos of one file."""

    @property
    def obs_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-step shape of each observation key, e.g. {'agentview_image': (84, 84, 3)}."""
        return {k: tuple(v.shape[1:]) for k, v in self.obs.items()}

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    def episode(self, e: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Views of demo e: ({key: (N, ...)}, actions (N, A))."""
        s = slice(int(self.offsets[e]), int(self.offsets[e] + self.lengths[e]))
        return {k: v[s] for k, v in self.obs.items()}, self.actions[s]


def is_gripper_column(values: np.ndarray) -> bool:
    """Whether an action column (N,) is an open/close command: both signs occur and every
    value is at least 0.5 from zero (robosuite's and Meta-World's grippers, -1 / +1, with or
    without an expert's small noise); a velocity or position column is not."""
    v = np.asarray(values, np.float64)
    return bool(v.size and (v > 0).any() and (v < 0).any() and (np.abs(v) >= 0.5).all())


def _demo_sort_key(name: str) -> tuple[int, int, str]:
    m = re.fullmatch(r"demo_(\d+)", name)
    return (0, int(m.group(1)), name) if m else (1, 0, name)


def _where(path: str, demo: str | None = None, key: str | None = None) -> str:
    parts = [f"{path}"]
    if demo is not None:
        parts.append(f"demo {demo!r}")
    if key is not None:
        parts.append(f"key {key!r}")
    return ", ".join(parts)


_H5_ERRORS = (OSError, KeyError, TypeError, ValueError, AttributeError, RuntimeError)
"""What h5py (and numpy decoding its arrays) raise on a truncated, corrupt or oddly built file;
`load_demos` turns each into a DatasetError that names where it was reading."""


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())


def _kind(x: Any) -> str:
    """'group', 'dataset float64 (3,)' or the type: what an HDF5 entry is, for messages."""
    if isinstance(x, h5py.Group):
        return "group"
    if isinstance(x, h5py.Dataset):
        return f"dataset {x.dtype} {x.shape}"
    return type(x).__name__


@contextmanager
def _reading(path: str, at: list[str | None]) -> Iterator[None]:
    """Turn an error that h5py raises while reading `at` = [demo, key] into a DatasetError."""
    try:
        yield
    except DatasetError:
        raise
    except _H5_ERRORS as e:
        raise DatasetError(
            f"{_where(path, *at)}: cannot be read ({_one_line(e)}); the file may be truncated "
            "or corrupt: write it again"
        ) from e


def _open(path: str) -> h5py.File:
    if not Path(path).is_file():
        raise DatasetError(f"{path}: no such file (pass the path of a robomimic-format HDF5 file)")
    try:
        return h5py.File(path, "r")
    except _H5_ERRORS as e:
        raise DatasetError(
            f"{path}: not a readable HDF5 file ({_one_line(e)}); a truncated copy or a "
            "non-HDF5 file? write it again"
        ) from e


def _demo_groups(f: h5py.File, path: str) -> tuple[h5py.Group, list[str]]:
    """The `data` group and its demo names, sorted by numeric suffix."""
    data = f.get("data")
    if data is None:
        raise DatasetError(
            f"{path}: no 'data' group; top-level keys are {sorted(f.keys())} "
            "(expected robomimic layout data/demo_<i>)"
        )
    if not isinstance(data, h5py.Group):
        raise DatasetError(
            f"{_where(path, None, 'data')}: is a {_kind(data)}, expected the group of demos "
            "data/demo_<i> (robomimic layout)"
        )
    available = sorted((k for k in data if isinstance(data.get(k), h5py.Group)), key=_demo_sort_key)
    if not available:
        raise DatasetError(f"{path}: the 'data' group holds no demos")
    return data, available


def _obs_group(g: h5py.Group, path: str, name: str) -> h5py.Group:
    obs = g.get("obs")
    if obs is None:
        raise DatasetError(
            f"{_where(path, name, 'obs')}: missing; the demo holds {sorted(g.keys())}"
        )
    if not isinstance(obs, h5py.Group):
        raise DatasetError(
            f"{_where(path, name, 'obs')}: is a {_kind(obs)}, expected the group of "
            "observation datasets obs/<key>"
        )
    return obs


def _mask(f: h5py.File, path: str, split: str) -> h5py.Dataset | None:
    """`mask/<split>`, or None when the file has no such mask."""
    masks = f.get("mask")
    if masks is not None and not isinstance(masks, h5py.Group):
        raise DatasetError(
            f"{_where(path, None, 'mask')}: is a {_kind(masks)}, expected a group of "
            "demo-name lists mask/train, mask/valid"
        )
    mask = masks.get(split) if masks is not None else None
    if mask is not None and not isinstance(mask, h5py.Dataset):
        raise DatasetError(
            f"{_where(path, None, f'mask/{split}')}: is a {_kind(mask)}, expected a dataset "
            "of demo names (bytes)"
        )
    return mask


def _split_names(f: h5py.File, path: str, split: str, available: list[str]) -> list[str]:
    """Demo names of `split` from `mask/<split>`; every demo (with a warning) if no such mask.
    A mask that is empty or names a demo not in data/ is an error: it is a broken file, and
    ignoring it would silently train or validate on other data than asked."""
    if split == "all":
        return available
    mask = _mask(f, path, split)
    if mask is None:
        warnings.warn(
            f"{path}: no mask/{split} in the file, so split={split!r} uses ALL {len(available)} demos "
            "(train and valid are then the same data); write mask/train and mask/valid "
            "or pass split='all' to silence this",
            UserWarning,
            stacklevel=3,
        )
        return available
    where = _where(path, None, f"mask/{split}")
    raw = np.asarray(mask[()]).reshape(-1)
    if raw.size == 0:
        raise DatasetError(
            f"{where}: mask/{split} is empty: no demos to load for split={split!r} (list demo "
            "names in it, or delete it)"
        )
    if raw.dtype.kind not in "SUO":
        raise DatasetError(f"{where}: expected demo names (bytes), got {raw.dtype} {mask.shape}")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
    missing = [n for n in names if n not in available]
    if missing:
        raise DatasetError(
            f"{where}: mask/{split} names demos {missing} that are not in data/ "
            f"(available: {available})"
        )
    return sorted(set(names), key=_demo_sort_key)


def has_split(path: str | Path, split: str) -> bool:
    """Whether the file holds `mask/<split>` (DatasetError if it is not a readable demo file).
    `ttm-train` validates on `mask/valid` only when there is one."""
    path = str(path)
    at: list[str | None] = [None, None]
    with _reading(path, at), _open(path) as f:
        return _mask(f, path, split) is not None


def first_demo_obs_keys(path: str | Path) -> list[str]:
    """Observation keys of the file's first demo (by numeric suffix), to choose default keys;
    DatasetError if the file has no such thing (`load_demos` then checks every demo)."""
    path = str(path)
    at: list[str | None] = [None, None]
    with _reading(path, at), _open(path) as f:
        _, available = _demo_groups(f, path)
        at[0] = available[0]
        return sorted(_obs_group(f["data"][available[0]], path, available[0]).keys())


def _num_samples(value: Any) -> int | None:
    """The attribute as an int, or None if it is not one (robomimic writes an int)."""
    a = np.asarray(value)
    if a.size != 1:
        return None
    v = a.reshape(())[()]
    if np.issubdtype(a.dtype, np.integer):
        return int(v)
    if np.issubdtype(a.dtype, np.floating) and float(v).is_integer():
        return int(v)
    return None


def _env_args(data: h5py.Group, path: str) -> dict[str, Any]:
    """`data.attrs['env_args']` (robomimic: JSON of env_name, env_type, env_kwargs); {} if absent."""
    if "env_args" not in data.attrs:
        return {}
    raw = data.attrs["env_args"]
    where = f"{path}: data attribute 'env_args'"
    if not isinstance(raw, (str, bytes)):
        raise DatasetError(f"{where}: expected a JSON string, got {type(raw).__name__} {raw!r:.80}")
    try:
        env_args = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{where}: is not valid JSON ({_one_line(e)})") from e
    if not isinstance(env_args, dict):
        raise DatasetError(
            f"{where}: expected a JSON object (env_name, env_kwargs, ...), got "
            f"{type(env_args).__name__} {env_args!r:.80}"
        )
    return env_args


def _is_real(dtype: np.dtype) -> bool:
    """Integer or float (not bool, complex, strings or compound types)."""
    return np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)


def load_demos(
    path: str | Path,
    obs_keys: tuple[str, ...] | list[str],
    split: str = "train",
    *,
    like: Demos | None = None,
) -> Demos:
    """Read, validate and decode the demos of `split`; raise DatasetError naming file, demo, key.

    Every problem, whatever raises it (our checks, h5py on a truncated or corrupt file, numpy
    decoding an odd dtype), is a DatasetError with a one-line message. `split`: see
    `_split_names` (no mask: every demo, with a warning; an empty mask or one naming a missing
    demo: an error). `like`: the demos must have the same per-step shapes and action width as
    these (the training split, when loading the validation split), so one model takes both.

    Two passes: the first checks structure, shapes and dtypes from metadata only and sizes
    the arrays; the second decodes each dataset straight into its rows and checks values.
    """
    path = str(path)
    obs_keys = tuple(obs_keys)
    at: list[str | None] = [None, None]  # [demo, key] being read, for errors h5py raises
    with _reading(path, at), _open(path) as f:
        data, available = _demo_groups(f, path)
        names = _split_names(f, path, split, available)
        env_args = _env_args(data, path)

        # Pass 1: structure, shapes, dtypes, lengths (metadata only).
        lengths: list[int] = []
        step_shapes: dict[str, tuple[int, ...]] = {}
        action_dim = None
        earlier = "earlier demos have"
        if like is not None:
            step_shapes = {k: s for k, s in like.obs_shapes.items() if k in obs_keys}
            action_dim, earlier = like.action_dim, "the training split has"
        for name in names:
            at[:] = [name, "actions"]
            g = data[name]
            a = g.get("actions")
            if a is None:
                raise DatasetError(
                    f"{_where(path, name, 'actions')}: missing; the demo holds {sorted(g.keys())}"
                )
            if not isinstance(a, h5py.Dataset) or a.ndim != 2 or not _is_real(a.dtype):
                raise DatasetError(
                    f"{_where(path, name, 'actions')}: expected a float dataset (N, A), got a "
                    f"{_kind(a)}"
                )
            if a.shape[0] == 0:
                raise DatasetError(f"{_where(path, name, 'actions')}: empty demo (0 steps)")
            n = a.shape[0]
            action_dim = action_dim or a.shape[1]
            if a.shape[1] != action_dim:
                raise DatasetError(
                    f"{_where(path, name, 'actions')}: {a.shape[1]}-D actions, but {earlier} {action_dim}-D"
                )
            if "num_samples" in g.attrs:
                at[1] = "num_samples"
                value = g.attrs["num_samples"]
                count = _num_samples(value)
                if count is None:
                    raise DatasetError(
                        f"{_where(path, name)}, attribute 'num_samples': {value!r:.80} is not an "
                        f"integer (expected the demo's step count, {n})"
                    )
                if count != n:
                    raise DatasetError(
                        f"{_where(path, name, 'actions')}: {n} steps but attribute num_samples={count}"
                    )
            at[1] = "obs"
            obs_group = _obs_group(g, path, name)
            have = sorted(obs_group.keys())
            for key in obs_keys:
                at[1] = key
                if key not in have:
                    raise DatasetError(
                        f"{_where(path, name, key)}: missing observation key; available obs keys: {have}"
                    )
                ds = obs_group[key]
                if not isinstance(ds, h5py.Dataset):
                    raise DatasetError(
                        f"{_where(path, name, key)}: is a {_kind(ds)}, expected a dataset (N, ...)"
                    )
                n_obs = ds.shape[0] if ds.ndim else 0  # a scalar dataset holds no steps
                if n_obs != n:
                    raise DatasetError(
                        f"{_where(path, name, key)}: {n_obs} observations but {n} actions (lengths must match)"
                    )
                if is_image_key(key):
                    if ds.dtype != np.uint8 or ds.ndim != 4 or ds.shape[-1] != 3:
                        raise DatasetError(
                            f"{_where(path, name, key)}: expected uint8 images (N, H, W, 3), got {ds.dtype} {ds.shape}"
                        )
                elif ds.ndim not in (1, 2) or not (_is_real(ds.dtype) or ds.dtype == bool):
                    raise DatasetError(
                        f"{_where(path, name, key)}: expected numeric low-dim (N, D), got {ds.dtype} {ds.shape}"
                    )
                shape = tuple(ds.shape[1:]) if ds.ndim > 1 else (1,)
                if step_shapes.setdefault(key, shape) != shape:
                    raise DatasetError(
                        f"{_where(path, name, key)}: per-step shape {shape}, but {earlier} {step_shapes[key]}"
                    )
            lengths.append(n)

        # Pass 2: decode into preallocated arrays and check values.
        lengths_np = np.asarray(lengths, dtype=np.int64)  # (E,)
        offsets = np.concatenate([[0], np.cumsum(lengths_np)[:-1]]).astype(np.int64)  # (E,)
        total = int(lengths_np.sum())
        obs = {
            k: np.empty((total, *step_shapes[k]), np.uint8 if is_image_key(k) else np.float32)
            for k in obs_keys
        }
        actions = np.empty((total, action_dim), np.float32)  # (sum N, A)
        for name, o, n in zip(names, offsets, lengths_np):
            g = data[name]
            rows = slice(int(o), int(o + n))
            for key in obs_keys:
                at[:] = [name, key]
                x = g["obs"][key][()]
                if not is_image_key(key):
                    # (N, D): float64 on disk -> float32; (N,) -> (N, 1)
                    x = np.asarray(x, np.float32).reshape(n, -1)
                    _check_finite(x, path, name, key)
                obs[key][rows] = x
            at[:] = [name, "actions"]
            a = np.asarray(g["actions"][()], np.float32)  # (N, A)
            _check_finite(a, path, name, "actions")
            bad = np.argwhere(np.abs(a) > 1.0)
            if len(bad):
                i, j = bad[0]
                raise DatasetError(
                    f"{_where(path, name, 'actions')}: {len(bad)} values outside [-1, 1]; first at step {i}, "
                    f"dim {j}: {a[i, j]!r} (OSC_POSE actions must be normalised to [-1, 1]; clip or rescale them)"
                )
            actions[rows] = a
    return Demos(path, list(names), lengths_np, offsets, obs, actions, env_args)


def task_name(env_args: dict[str, Any], path: str) -> str:
    """The task a file's demos show, from its env_args: our tasks' gymnasium ids `ttm/<task>-v0`
    give `<task>` (`MW-reach`, `PointCue`: the names of `ttm-collect --task` and `ttm-eval
    --task`); any other `env_name` (robomimic's robosuite `Lift`) is the name itself.
    DatasetError when the file has no env_args naming its env."""
    name = env_args.get("env_name")
    if not isinstance(name, str) or not name:
        raise DatasetError(
            f"{path}: data attribute 'env_args' names no env_name, so its task is unknown; a "
            "multi-task run names each file's task from it (ttm-collect writes it)"
        )
    m = re.fullmatch(r"ttm/(.+)-v\d+", name)
    return m[1] if m else name


def merge_demos(parts: list[Demos], *, like: Demos | None = None) -> Demos:
    """The demos of several files as one `Demos` whose episodes are tagged with their task
    (`task_name` of each file's env_args; files of the same task share one). Tasks are
    numbered in the order they first appear, or as in `like` (the merged training split,
    when merging the validation split). Every file must give the same observation keys,
    per-step shapes and action width, or a DatasetError names the two files that differ.
    Arrays are concatenated in the order of `parts`, one key at a time, each part's array
    released as it is copied (so RAM peaks at the demos plus one key, not twice the demos):
    the parts are left without observations and actions."""
    first = parts[0]
    for d in parts[1:]:
        if sorted(d.obs) != sorted(first.obs):
            raise DatasetError(
                f"{d.path}: observation keys {sorted(d.obs)}, but {first.path} gives "
                f"{sorted(first.obs)}; the datasets of one run must give the same keys "
                "(choose common ones with --obs-keys)"
            )
        for k, shape in first.obs_shapes.items():
            if d.obs_shapes[k] != shape:
                raise DatasetError(
                    f"{d.path}, key {k!r}: per-step shape {d.obs_shapes[k]}, but {first.path} "
                    f"has {shape}; collect the datasets of one run with the same image size"
                )
        if d.action_dim != first.action_dim:
            raise DatasetError(
                f"{d.path}: {d.action_dim}-D actions, but {first.path} has "
                f"{first.action_dim}-D; one policy takes the datasets of one action space"
            )
    tasks: dict[str, dict[str, Any]] = dict(like.tasks) if like is not None else {}
    ids = []
    for d in parts:
        name = task_name(d.env_args, d.path)
        if like is not None and name not in tasks:
            raise DatasetError(
                f"{d.path}: task {name!r} is not among the training tasks {list(tasks)}"
            )
        tasks.setdefault(name, d.env_args)
        ids.append(np.full(len(d.names), list(tasks).index(name), np.int64))
    lengths = np.concatenate([d.lengths for d in parts])  # (E,)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)  # (E,)
    obs = {k: np.concatenate([d.obs.pop(k) for d in parts]) for k in list(first.obs)}
    actions = np.concatenate([d.actions for d in parts])  # (sum N, A)
    for d in parts:
        d.actions = d.actions[:0]
    return Demos(
        path=" + ".join(d.path for d in parts),
        names=[f"{d.path}:{n}" for d in parts for n in d.names],
        lengths=lengths,
        offsets=offsets,
        obs=obs,
        actions=actions,
        tasks=tasks,
        task_ids=np.concatenate(ids),
    )


def _check_finite(x: np.ndarray, path: str, demo: str, key: str) -> None:
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        idx = tuple(int(i) for i in bad[0])
        raise DatasetError(
            f"{_where(path, demo, key)}: {len(bad)} NaN/Inf values; first at step {idx[0]}, index {idx}: {x[idx]!r}"
        )


# --------------------------------------------------------------------------- statistics


def compute_stats(demos: Demos) -> dict[str, np.ndarray]:
    """Per-dimension mean, std (population), min, max of every low-dim key and of the actions,
    as float32 arrays named `obs/<key>/mean`, ..., `action/max` (safetensors-ready).

    Compute them on the TRAINING split and store them with the policy. Images get none
    (uint8 -> [0, 1] in the model). A std of 0 (a constant dimension) is kept as 0: the
    consumer must clamp it (e.g. `max(std, 1e-6)`) before dividing.
    """
    stats: dict[str, np.ndarray] = {}
    arrays = {f"obs/{k}": v for k, v in demos.obs.items() if not is_image_key(k)}
    arrays["action"] = demos.actions
    for name, x in arrays.items():
        x64 = x.astype(np.float64)  # (sum N, D): accumulate in float64
        for stat, fn in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max)):
            stats[f"{name}/{stat}"] = fn(x64, axis=0).astype(np.float32)  # (D,)
    return stats


# --------------------------------------------------------------------------- datasets


class _DemoSamples(Dataset):
    """Shared gather: `T` consecutive steps of demo e from step `start` on, padded past the end."""

    def __init__(self, demos: Demos, *, action_horizon: int = 0) -> None:
        self.demos = demos
        self.action_horizon = action_horizon

    def _gather(self, e: int, start: int, T: int) -> dict[str, Any]:
        d = self.demos
        n, o = int(d.lengths[e]), int(d.offsets[e])
        t = start + np.arange(T)  # (T,) step within the episode
        mask = t < n  # (T,)
        rows = o + np.minimum(t, n - 1)  # (T,) past the end: repeat the last frame
        item: dict[str, Any] = {"obs": {k: torch.from_numpy(v[rows]) for k, v in d.obs.items()}}
        if self.action_horizon == 0:
            item["actions"] = torch.from_numpy(d.actions[rows])  # (T, A)
        else:
            tk = t[:, None] + np.arange(self.action_horizon)  # (T, K)
            item["actions"] = torch.from_numpy(d.actions[o + np.minimum(tk, n - 1)])  # (T, K, A)
            item["action_mask"] = torch.from_numpy((tk < n) & mask[:, None])  # (T, K)
        item["final"] = {
            k: torch.from_numpy(v[o + n - 1]) for k, v in d.obs.items() if not is_image_key(k)
        }
        item["mask"] = torch.from_numpy(mask)
        item["is_first"] = torch.from_numpy(t == 0)
        item["demo"] = torch.tensor(e, dtype=torch.int64)
        item["start"] = torch.tensor(start, dtype=torch.int64)
        if d.task_ids is not None:
            item["task"] = torch.tensor(d.task_ids[e], dtype=torch.int64)
        return item


class EpisodeDataset(_DemoSamples):
    """Whole episodes from step 0, padded to `max_len` (default: the longest in `demos`) with
    mask False, so one batch holds cue and decision of a memory task. `is_first[0]` is True."""

    def __init__(
        self, demos: Demos, *, action_horizon: int = 0, max_len: int | None = None
    ) -> None:
        super().__init__(demos, action_horizon=action_horizon)
        longest = int(demos.lengths.max())
        self.max_len = longest if max_len is None else max_len
        if self.max_len < longest:
            e = int(demos.lengths.argmax())
            raise DatasetError(
                f"{_where(demos.path, demos.names[e])}: {longest} steps exceed max_len={max_len}; raise max_len"
            )

    def __len__(self) -> int:
        return len(self.demos.names)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self._gather(i, 0, self.max_len)


def make_dataset(cfg: DataConfig, demos: Demos | None = None) -> EpisodeDataset:
    """The dataset `cfg` describes (loading `cfg.path` / `cfg.split` unless `demos` is given).
    Images stay whole: the policy crops them (ttm_policy/augment.py)."""
    demos = demos if demos is not None else load_demos(cfg.path, cfg.obs_keys, cfg.split)
    return EpisodeDataset(demos, action_horizon=cfg.action_horizon)


def trim_padding(batch: dict[str, Any]) -> dict[str, Any]:
    """A collated batch of episodes cut to its longest episode: the steps after it are padding
    in every sample (mask False), and a causal core's outputs on real steps never depend on
    later steps, so the loss is the same at a fraction of the compute (episode lengths vary;
    the dataset pads to the longest of the whole file)."""
    mask = batch["mask"]  # (B, T)
    real = mask.any(0).nonzero()
    T = int(real.max()) + 1 if len(real) else 1
    if mask.shape[1] == T:
        return batch

    def cut(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: cut(v) for k, v in x.items()}
        return x[:, :T] if torch.is_tensor(x) and x.ndim >= 2 and x.shape[1] == mask.shape[1] else x

    return {k: (v if k == "final" else cut(v)) for k, v in batch.items()}


# --------------------------------------------------------------------------- sampling / DDP


class StepBatchSampler(Sampler[list[int]]):
    """Endless batches that are a pure function of (seed, step): resume-exact and DDP-ready.

    Step s takes the global batch `world_size * batch_size` positions `[s*G, (s+1)*G)` of an
    endless sequence of per-epoch permutations (epoch e shuffled by seed + e, no replacement
    within an epoch); rank r gets the r-th contiguous slice of it. So ranks see disjoint
    samples, their mean gradient equals the single-process gradient of the same global batch,
    and `start_step` resumes the exact sequence without saving sampler state. Use as
    `DataLoader(ds, batch_sampler=StepBatchSampler(len(ds), B, rank=r, world_size=w,
    start_step=step))` and stop after the wanted number of steps.

    For a finite pass over a validation set under DDP, torch's
    `DistributedSampler(ds, num_replicas=w, rank=r, shuffle=False)` is the right tool (it pads
    with repeats so every rank has the same count; de-duplicate with `demo`/`start` if exact
    numbers matter).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start_step: int = 0,
    ) -> None:
        if n < 1 or batch_size < 1:
            raise ValueError(
                f"StepBatchSampler needs n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size
        self.seed, self.start_step = seed, start_step
        self._perms: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of the samples in epoch `epoch` (a pure function of seed and epoch)."""
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng((self.seed, epoch)).permutation(self.n)}
        return self._perms[epoch]

    def batch(self, step: int) -> list[int]:
        """This rank's indices at `step`."""
        G = self.batch_size * self.world_size
        pos = (
            step * G + self.rank * self.batch_size + np.arange(self.batch_size)
        )  # (B,) global positions
        return [int(self.permutation(int(p // self.n))[p % self.n]) for p in pos]

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


_USED_UP = 2**40  # a lane's first step before it holds an episode


class EpisodeStreams(Sampler[list[tuple[int, int]]]):
    """Endless batches of consecutive `chunk`-step pieces of episodes: (demo, first step) per lane.

    Each of the `world_size * batch_size` lanes reads one episode from its first step in
    pieces of `chunk` steps, one piece per optimiser step, and takes the next episode when its
    current one is used up. The trainer carries each lane's memory from one piece to the next
    (detached), so every step is trained from the memory a rollout would hold there, at the
    cost of `chunk` steps per lane, however long the episodes are (`TrainConfig.chunk`).
    Episodes come in the order of `StepBatchSampler`'s permutations (seed, epoch), taken by
    the lanes that need one, in lane order; so when no episode is longer than `chunk`, every
    lane takes a new episode at every step and the batches are exactly `StepBatchSampler`'s.
    Lane `rank * batch_size + i` is row i of rank `rank`. A pure function of (seed, lengths,
    step): resume-exact without saved sampler state (the lanes' memory is saved by the
    trainer)."""

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        chunk: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start_step: int = 0,
    ) -> None:
        if chunk < 1:
            raise ValueError(f"EpisodeStreams needs chunk >= 1, got {chunk}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        # The episode order (and the checks of the sizes, rank and world size).
        order = dict(rank=rank, world_size=world_size, seed=seed)
        self.order = StepBatchSampler(len(self.lengths), batch_size, **order)
        self.batch_size, self.chunk, self.rank, self.world_size = (
            batch_size,
            chunk,
            rank,
            world_size,
        )
        self.start_step = start_step
        G = batch_size * world_size
        self._demo = np.zeros(G, dtype=np.int64)
        self._start = np.zeros(G, dtype=np.int64)
        self._restart()

    def _restart(self) -> None:
        self._step, self._drawn = -1, 0  # before step 0, every lane used up
        self._start[:] = _USED_UP

    def _advance(self) -> None:
        """Move every lane to its piece of the next step; lanes whose episode is used up take
        the next episode of the permutation stream, in lane order."""
        self._start += self.chunk
        self._step += 1
        n = self.order.n
        for lane in np.flatnonzero(self._start >= self.lengths[self._demo]):
            self._demo[lane] = self.order.permutation(self._drawn // n)[self._drawn % n]
            self._start[lane] = 0
            self._drawn += 1

    def batch(self, step: int) -> list[tuple[int, int]]:
        """This rank's (demo, first step) per lane at `step` (cheap for the next step; an
        earlier step replays the schedule from step 0)."""
        if step < self._step:
            self._restart()
        while self._step < step:
            self._advance()
        lanes = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        return [(int(e), int(s)) for e, s in zip(self._demo[lanes], self._start[lanes])]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


class ChunkDataset(_DemoSamples):
    """`chunk` consecutive steps of a demo from a given step, padded past its end (mask False);
    indexed by (demo, first step), as `EpisodeStreams` yields them. `is_first[0]` is True only
    when the first step is 0: a piece that continues an episode carries the memory in."""

    def __init__(self, demos: Demos, chunk: int, *, action_horizon: int = 0) -> None:
        super().__init__(demos, action_horizon=action_horizon)
        self.chunk = chunk

    def __len__(self) -> int:
        return len(self.demos.names)

    def __getitem__(self, index: tuple[int, int]) -> dict[str, Any]:
        e, start = index
        return self._gather(int(e), int(start), self.chunk)
