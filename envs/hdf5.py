"""Demonstrations in robomimic's HDF5 layout: a writer for `ttm-collect` and small readers.

Layout (the same as robomimic's own datasets, e.g. /work/shared/fixtures/*.hdf5):

    data                    attrs: total (int, samples over all demos), env_args (JSON str)
    data/demo_<i>           attrs: num_samples (int N), model_file (MJCF str); ours also add
                                   seed (int, the reset seed) and success (bool)
        actions   (N, 7)    float64, action a_t taken after obs_t
        rewards   (N,)      float64, reward after a_t
        dones     (N,)      int64, 1 on the last step (robomimic done_mode 2)
        states    (N, S)    float64, simulator state at obs_t (env.get_sim_state())
        obs/<key> (N, ...)  obs_t; images uint8 (N, H, W, 3) chunked per frame, low-dim float64
    mask/train, mask/valid  (K,) bytes, demo names, e.g. np.array(["demo_0"], dtype="S")

Every dataset is gzip-compressed. Readers accept robomimic's files too: demo names that do not
start at 0, extra keys and groups (`next_obs`, `action_dict`), extra attrs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

GZIP_LEVEL = 4  # robomimic's choice; level 9 saves ~5% more for several times the CPU


def _demo_index(name: str) -> int:
    # "demo_12" -> 12; robomimic sorts demos by this number, not by string order.
    try:
        return int(name.split("_")[-1])
    except ValueError:
        return -1


class DemoWriter:
    """Write demos one at a time into a new robomimic-format file.

    with DemoWriter(path, env_args) as w:
        w.add(demo, model_xml)          # demo: dict with actions, rewards, dones, states, obs
        w.finish(valid_fraction=0.1, seed=0)
    """

    def __init__(self, path: str | Path, env_args: dict[str, Any]):
        self.path = Path(path)
        # HDF5 1.10 object formats: compact chunk indexes make the file ~2.8x smaller than the
        # default (1.8) ones for many small per-frame chunks (PointCue, 100 demos: 0.95 vs
        # 2.66 MB), and any HDF5 >= 1.10 (h5py >= 2.8, robomimic) reads them. Not "latest":
        # HDF5 2.x formats would lock out readers on HDF5 1.x.
        self.file = h5py.File(self.path, "w", libver=("v110", "v110"))
        self.data = self.file.create_group("data")
        self.data.attrs["env_args"] = json.dumps(env_args, indent=4)
        self.data.attrs["total"] = np.int64(0)
        self.names: list[str] = []
        self.total = 0

    def add(self, demo: dict[str, Any], model_xml: str, **attrs: Any) -> str:
        """Append `demo` as `data/demo_<k>`; `attrs` (e.g. seed, success) go on its group."""
        n = len(demo["actions"])
        for key in ("actions", "rewards", "dones", "states"):
            if len(demo[key]) != n:
                raise ValueError(f"demo {key} has {len(demo[key])} rows; actions has {n}")
        for key, value in demo["obs"].items():
            if len(value) != n:
                raise ValueError(f"demo obs/{key} has {len(value)} rows; actions has {n}")
        name = f"demo_{len(self.names)}"
        g = self.data.create_group(name)
        g.attrs["num_samples"] = np.int64(n)
        g.attrs["model_file"] = model_xml
        for k, v in attrs.items():
            g.attrs[k] = v
        kw = dict(compression="gzip", compression_opts=GZIP_LEVEL)
        g.create_dataset("actions", data=np.asarray(demo["actions"], np.float64), **kw)
        g.create_dataset("rewards", data=np.asarray(demo["rewards"], np.float64), **kw)
        g.create_dataset("dones", data=np.asarray(demo["dones"], np.int64), **kw)
        g.create_dataset("states", data=np.asarray(demo["states"], np.float64), **kw)
        for key, value in demo["obs"].items():
            value = np.asarray(value)
            if value.dtype == np.uint8:  # images: one chunk per frame, so one frame reads fast
                g.create_dataset(f"obs/{key}", data=value, chunks=(1, *value.shape[1:]), **kw)
            else:
                g.create_dataset(f"obs/{key}", data=value.astype(np.float64), **kw)
        self.names.append(name)
        self.total += n
        self.data.attrs["total"] = np.int64(self.total)
        return name

    def finish(self, valid_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
        """Write `mask/train` and `mask/valid` (a seeded random split) and close the file."""
        train, valid = split_train_valid(self.names, valid_fraction, seed)
        self.file.create_dataset("mask/train", data=np.array(train, dtype="S"))
        self.file.create_dataset("mask/valid", data=np.array(valid, dtype="S"))
        self.close()
        return train, valid

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()

    def __enter__(self) -> DemoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def split_train_valid(
    names: list[str], valid_fraction: float, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Seeded random split; at least one demo on each side when there are two or more and
    `valid_fraction` > 0. Both lists come back sorted by demo index."""
    n = len(names)
    n_valid = min(max(round(valid_fraction * n), 1), n - 1) if valid_fraction > 0 and n >= 2 else 0
    chosen = set(np.random.default_rng(seed).permutation(n)[:n_valid].tolist())
    valid = [m for i, m in enumerate(names) if i in chosen]
    train = [m for i, m in enumerate(names) if i not in chosen]
    return sorted(train, key=_demo_index), sorted(valid, key=_demo_index)


# --- reading ---------------------------------------------------------------------------------


def _data_group(f: h5py.File) -> h5py.Group:
    if "data" not in f:
        raise ValueError(f"{f.filename}: no 'data' group; not a robomimic-format dataset")
    return f["data"]


def read_env_args(f: h5py.File) -> dict[str, Any]:
    """The parsed `data.attrs["env_args"]` JSON."""
    data = _data_group(f)
    if "env_args" not in data.attrs:
        raise ValueError(f"{f.filename}: data group has no 'env_args' attribute")
    return json.loads(data.attrs["env_args"])


def demo_names(f: h5py.File, mask: str | None = None) -> list[str]:
    """Demo names sorted by index; with `mask` ("train"/"valid"), those listed in mask/<mask>."""
    if mask is None:
        return sorted(_data_group(f).keys(), key=_demo_index)
    if f"mask/{mask}" not in f:
        have = list(f["mask"].keys()) if "mask" in f else []
        raise ValueError(f"{f.filename}: no mask/{mask}; masks present: {have}")
    return sorted((m.decode() for m in f[f"mask/{mask}"][:]), key=_demo_index)


def read_demo(f: h5py.File, name: str, obs_keys: list[str] | None = None) -> dict[str, Any]:
    """One demo as numpy arrays: actions, rewards, dones, states, obs {key: array} (all keys,
    or `obs_keys`), and its attrs (num_samples, model_file, ...) under "attrs"."""
    data = _data_group(f)
    if name not in data:
        raise KeyError(f"{f.filename}: no demo {name!r}; have {demo_names(f)[:5]}...")
    g = data[name]
    demo: dict[str, Any] = {k: g[k][:] for k in ("actions", "rewards", "dones", "states") if k in g}
    keys = list(g["obs"].keys()) if obs_keys is None else obs_keys
    for key in keys:
        if key not in g["obs"]:
            raise KeyError(f"{f.filename}: {name}/obs has no {key!r}; has {list(g['obs'])}")
    demo["obs"] = {k: g["obs"][k][:] for k in keys}
    demo["attrs"] = dict(g.attrs)
    return demo
