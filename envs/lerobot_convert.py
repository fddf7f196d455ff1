"""`ttm-convert`: LeRobotDataset v3 <-> our robomimic-layout HDF5 (envs/hdf5.py), and a
LeRobot checkpoint of the TTM plugin -> our checkpoint (ttm_policy/lerobot_checkpoint.py).

    ttm-convert lerobot-to-hdf5 --root data/mw_reach_lr --out data/mw_reach.hdf5
    ttm-convert hdf5-to-lerobot --path data/mw_reach.hdf5 --root data/mw_reach_lr \
        --repo-id local/mw_reach [--images video|image] [--dtype float32|float64]
    ttm-convert lerobot-policy --path outputs/train/checkpoints/last/pretrained_model \
        --out runs/from_lerobot [--rename observation.image=corner2_image] [--dataset demos.hdf5]

The key mapping, image layout, fps and names are in docs/lerobot.md; in short:

    LeRobot feature                          HDF5 (data/demo_<e>/...)
    observation.images.<cam>  video|image    obs/<cam>_image       uint8 (N, H, W, 3)
    observation.image         video|image    obs/camera_image      uint8 (N, H, W, 3)
    observation.state         (D,) names     obs/<key> for each low-dim key named in `names`
                                             (`<key>_<i>`), else obs/state (N, D)
    observation.environment_state            obs/object (ours: simulator object poses)
    observation.<other>                      obs/<other, '.' -> '_'>
    action                    (A,)           actions     float64 (N, A)
    next.reward / next.done   (1,)           rewards float64 (N,) / dones int64 (N,)
    sim_state                 (S,)           states      float64 (N, S)
    task (per frame string)                  task_index  int64 (N,) + the task list (attrs)

Which library does what. Reading a LeRobot dataset is ours: its files are a documented
format (meta/info.json, parquet tables, mp4 videos or PNG bytes in the parquet), read with
pyarrow and PyAV, so `lerobot-to-hdf5` runs without LeRobot, torch or torchvision. Writing
one is LeRobot's: `hdf5-to-lerobot` calls `LeRobotDataset.create`, `add_frame`,
`save_episode` and `finalize` of the `lerobot` package (0.4.4), so its statistics, episode
index and video files are exactly what `lerobot-train` expects. LeRobot 0.4.4 imports
torchvision, whose only torch-2.13 build on PyPI (0.28.0) is a CUDA build that cannot load on
a CPU-only torch: run `hdf5-to-lerobot` where LeRobot imports, e.g. the LeRobot venv that
scripts/lerobot_check.sh builds (this package is installed there too).

Exactness. Low-dim values and actions: LeRobot stores float32 by default (what policies
consume); `--dtype float64` keeps our float64 values bit for bit. Images: `--images image`
stores PNG (lossless, exact round trip); `--images video` (LeRobot's default, smaller) stores
LeRobot's yuv420p video, which is lossy (measured error in docs/lerobot.md).

Everything a LeRobot dataset has no field for (our env_args, demo names, masks, per-demo
attrs such as seed, success and model_file) goes to `meta/robomimic.json` beside LeRobot's
meta files, and LeRobot's own names (features, fps, robot_type, tasks) go into the HDF5's
`data.attrs["lerobot"]` (JSON), so a conversion back restores both.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
from tqdm import tqdm

from envs.hdf5 import DemoWriter, demo_names, read_demo, read_env_args

ROBOMIMIC_META = "meta/robomimic.json"  # our extra file inside a LeRobot dataset
CODEBASE_VERSION = "v3.0"  # the LeRobotDataset format read and written here

STATE = "observation.state"
ENV_STATE = "observation.environment_state"
ACTION = "action"
REWARD, DONE, SIM_STATE = "next.reward", "next.done", "sim_state"
# LeRobot's bookkeeping columns: rebuilt by its writer, not data of ours.
BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
ENV_STATE_KEY = "object"  # our simulator-object observation (an ablation input, not proprio)

ACTION_NAMES = {  # our two action spaces (DESIGN.md: OSC_POSE + gripper; Meta-World's 4-D)
    7: ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"],
    4: ["dx", "dy", "dz", "gripper"],
}


class ConvertError(ValueError):
    """Input that cannot be converted; the message names the file, key or episode."""


# --------------------------------------------------------------------------- key mapping


def camera_key(feature: str) -> str:
    """LeRobot image feature -> our obs key: observation.images.<cam> -> <cam>_image."""
    if feature.startswith("observation.images."):
        name = feature.removeprefix("observation.images.")
    elif feature == "observation.image":
        name = "camera"
    else:
        name = feature.removeprefix("observation.")
    name = name.replace(".", "_")
    return name if name.endswith("_image") else f"{name}_image"


def image_feature(key: str) -> str:
    """Our obs key -> LeRobot image feature: <cam>_image -> observation.images.<cam>."""
    return "observation.images." + key.removesuffix("_image")


def lowdim_key(feature: str) -> str:
    """Another LeRobot observation feature -> our obs key ('.' is not allowed in our keys)."""
    if feature == ENV_STATE:
        return ENV_STATE_KEY
    return feature.removeprefix("observation.").replace(".", "_")


def state_names(keys: list[str], widths: dict[str, int]) -> list[str]:
    """Names of the concatenated observation.state: `<key>_<i>` for each dimension."""
    return [f"{k}_{i}" for k in keys for i in range(widths[k])]


def split_state_names(names: list[str] | None) -> list[tuple[str, int]] | None:
    """`<key>_<i>` names (as `state_names` writes them) -> [(key, width), ...] in order; None
    when the names do not follow that pattern (then the state stays one key, obs/state)."""
    if not names:
        return None
    groups: list[tuple[str, int]] = []
    for n in names:
        m = re.fullmatch(r"(.+)_(\d+)", str(n))
        if m is None:
            return None
        key, i = m.group(1), int(m.group(2))
        if groups and groups[-1][0] == key and i == groups[-1][1]:
            groups[-1] = (key, i + 1)
        elif i == 0 and key not in (g[0] for g in groups):
            groups.append((key, 1))
        else:
            return None
    return groups


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode()
    return value


# --------------------------------------------------------------------------- reading LeRobot


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConvertError(f"{path}: missing; not a LeRobotDataset v3 directory") from None
    except json.JSONDecodeError as e:
        raise ConvertError(f"{path}: not valid JSON ({e})") from e


def _read_tables(directory: Path, what: str) -> Any:
    """Every `chunk-*/file-*.parquet` under `directory`, concatenated (pyarrow Table)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = sorted(directory.glob("chunk-*/file-*.parquet"))
    if not paths:
        raise ConvertError(f"{directory}: no chunk-*/file-*.parquet files ({what})")
    try:
        return pa.concat_tables([pq.read_table(p) for p in paths], promote_options="default")
    except (OSError, pa.ArrowInvalid) as e:
        raise ConvertError(f"{directory}: cannot read the {what} parquet files ({e})") from e


class LeRobotReader:
    """A local LeRobotDataset v3, read episode by episode without LeRobot:

    r = LeRobotReader(root)
    r.info["fps"], r.features, r.num_episodes
    r.episode(e) -> {feature: (N, ...) array}; images uint8 (N, H, W, 3); "task" (N,) str
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConvertError(f"{self.root}: no such directory (a LeRobotDataset v3 root)")
        self.info = _read_json(self.root / "meta/info.json")
        version = str(self.info.get("codebase_version", "?"))
        if not version.startswith("v3"):
            raise ConvertError(
                f"{self.root}/meta/info.json: codebase_version {version!r}; only v3.x is read "
                "here (convert a v2.1 dataset with LeRobot's "
                "lerobot.datasets.v30.convert_dataset_v21_to_v30 first)"
            )
        self.fps = int(self.info["fps"])
        self.features: dict[str, dict[str, Any]] = self.info["features"]
        for key in (ACTION,):
            if key not in self.features:
                raise ConvertError(
                    f"{self.root}/meta/info.json: no {key!r} feature; have {sorted(self.features)}"
                )
        self.episodes = _read_tables(self.root / "meta/episodes", "episode index").to_pylist()
        self.episodes.sort(key=lambda ep: ep["episode_index"])
        data = _read_tables(self.root / "data", "frame data")
        self.data = data.sort_by("index")
        self.ep_of_row = self.data.column("episode_index").to_numpy()
        tasks_path = self.root / "meta/tasks.parquet"
        self.tasks: dict[int, str] = {}
        if tasks_path.is_file():  # pandas-written: the task strings are its index column
            import pyarrow.parquet as pq

            table = pq.read_table(tasks_path)
            meta = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
            text = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
            text = text or [c for c in table.column_names if c != "task_index"]
            for row in table.to_pylist():
                self.tasks[int(row["task_index"])] = str(row[text[0]])
        extra = self.root / ROBOMIMIC_META
        self.robomimic = _read_json(extra) if extra.is_file() else None

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    def video_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f["dtype"] == "video"]

    def image_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f["dtype"] in ("image", "video")]

    def episode(self, e: int) -> dict[str, np.ndarray]:
        """Every feature of episode `e` (position in episode order), frames in order."""
        ep = self.episodes[e]
        index = ep["episode_index"]
        rows = np.flatnonzero(self.ep_of_row == index)
        n = int(ep["length"])
        if len(rows) != n:
            raise ConvertError(
                f"{self.root}: episode {index} has {len(rows)} rows in data/ but length {n} in "
                "meta/episodes"
            )
        table = self.data.take(rows)
        out: dict[str, np.ndarray] = {}
        for key, ft in self.features.items():
            if ft["dtype"] == "video":
                out[key] = self._decode_video(key, ep, table.column("timestamp").to_numpy())
            elif ft["dtype"] == "image":
                out[key] = self._decode_images(key, table.column(key).to_pylist(), index)
            elif ft["dtype"] == "string":
                out[key] = np.asarray(table.column(key).to_pylist(), dtype=object)
            else:
                values = table.column(key).to_pylist()
                out[key] = np.asarray(values, dtype=ft["dtype"]).reshape(n, *ft["shape"])
        out["task"] = np.asarray(
            [self.tasks.get(int(t), "") for t in out["task_index"].reshape(-1)], dtype=object
        )
        return out

    def _decode_images(self, key: str, cells: list[Any], episode: int) -> np.ndarray:
        """PNG (or other) bytes in the parquet -> uint8 (N, H, W, 3)."""
        import io

        from PIL import Image

        frames = []
        for i, cell in enumerate(cells):
            data = cell.get("bytes") if isinstance(cell, dict) else None
            if data is None:  # not embedded: a path relative to the root
                path = cell.get("path") if isinstance(cell, dict) else None
                if not path:
                    raise ConvertError(f"{self.root}: {key} of episode {episode} frame {i} empty")
                data = (self.root / path).read_bytes()
            with Image.open(io.BytesIO(data)) as im:
                frames.append(np.asarray(im.convert("RGB")))
        return np.stack(frames)

    def _decode_video(self, key: str, ep: dict[str, Any], timestamps: np.ndarray) -> np.ndarray:
        """The episode's frames of video `key`: the frame nearest to from_timestamp + t for each
        frame timestamp t (LeRobot's own rule), decoded with PyAV -> uint8 (N, H, W, 3)."""
        import av

        path = self.root / self.info["video_path"].format(
            video_key=key,
            chunk_index=ep[f"videos/{key}/chunk_index"],
            file_index=ep[f"videos/{key}/file_index"],
        )
        if not path.is_file():
            raise ConvertError(f"{path}: missing video of {key} (episode {ep['episode_index']})")
        start = float(ep[f"videos/{key}/from_timestamp"])
        want = start + timestamps.astype(np.float64)  # (N,) seconds in the file
        tol = 0.5 / self.fps
        frames: list[np.ndarray] = []
        times: list[float] = []
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            container.seek(max(int((start - tol) / stream.time_base), 0), stream=stream)
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base)
                if t < want[0] - tol:
                    continue
                if t > want[-1] + tol:
                    break
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(t)
        if not frames:
            raise ConvertError(f"{path}: no frames between {want[0]:.3f} and {want[-1]:.3f} s")
        times_a = np.asarray(times)
        nearest = np.abs(times_a[None, :] - want[:, None]).argmin(1)  # (N,)
        off = np.abs(times_a[nearest] - want)
        if off.max() > tol:
            bad = int(off.argmax())
            raise ConvertError(
                f"{path}: no frame within {tol * 1e3:.1f} ms of {want[bad]:.4f} s (episode "
                f"{ep['episode_index']} frame {bad}); the video and data/ disagree"
            )
        return np.stack([frames[j] for j in nearest])


# --------------------------------------------------------------------------- LeRobot -> HDF5


def lerobot_to_hdf5(root: str | Path, out: str | Path, *, overwrite: bool = False) -> dict:
    """Write the LeRobotDataset v3 at `root` as a robomimic-layout HDF5 file `out`.
    Returns a summary (episodes, frames, keys)."""
    reader = LeRobotReader(root)
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConvertError(f"{out} exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    feats = reader.features
    rm = reader.robomimic or {}
    state_groups = split_state_names(feats.get(STATE, {}).get("names")) if STATE in feats else None
    if state_groups is not None and sum(w for _, w in state_groups) != feats[STATE]["shape"][0]:
        state_groups = None
    mapping: dict[str, Any] = {}  # LeRobot feature -> our key(s), for the way back
    for key, ft in feats.items():
        if key in BOOKKEEPING:
            continue
        if ft["dtype"] in ("image", "video"):
            mapping[key] = camera_key(key)
        elif key == STATE:
            mapping[key] = [k for k, _ in state_groups] if state_groups else "state"
        elif key.startswith("observation."):
            mapping[key] = lowdim_key(key)
        elif key in (ACTION, REWARD, DONE, SIM_STATE):
            mapping[key] = {ACTION: "actions", REWARD: "rewards", DONE: "dones"}.get(key, "states")
        else:
            mapping[key] = f"extra/{key.replace('.', '_')}"
    env_args = rm.get(
        "env_args",
        {
            "env_name": reader.info.get("robot_type") or Path(root).name,
            "env_version": f"lerobot dataset {reader.info.get('codebase_version')}",
            "type": 2,
            "env_kwargs": {},
        },
    )
    demo_meta = {d["episode_index"]: d for d in rm.get("demos", [])}
    tmp = out.parent / f".{out.name}.tmp"
    names: list[str] = []
    frames = 0
    try:
        with DemoWriter(tmp, env_args) as w:
            lerobot_attr = {
                "codebase_version": reader.info.get("codebase_version"),
                "fps": reader.fps,
                "robot_type": reader.info.get("robot_type"),
                "features": {k: v for k, v in feats.items() if k not in BOOKKEEPING},
                "mapping": mapping,
                "tasks": [reader.tasks[i] for i in sorted(reader.tasks)],
            }
            w.data.attrs["lerobot"] = json.dumps(lerobot_attr)
            bar = tqdm(range(reader.num_episodes), desc="lerobot -> hdf5", unit="ep")
            for e in bar:
                ep = reader.episode(e)
                n = len(ep[ACTION])
                demo: dict[str, Any] = {"obs": {}, "actions": ep[ACTION].astype(np.float64)}
                demo["rewards"] = (
                    ep[REWARD].reshape(n).astype(np.float64) if REWARD in ep else np.zeros(n)
                )
                demo["dones"] = (
                    ep[DONE].reshape(n).astype(np.int64)
                    if DONE in ep
                    else (np.arange(n) == n - 1).astype(np.int64)
                )
                demo["states"] = (
                    ep[SIM_STATE].astype(np.float64).reshape(n, -1)
                    if SIM_STATE in ep
                    else np.zeros((n, 0))
                )
                extras = {}
                for key, ours in mapping.items():
                    if key in (ACTION, REWARD, DONE, SIM_STATE):
                        continue
                    value = ep[key]
                    if feats[key]["dtype"] in ("image", "video"):
                        demo["obs"][ours] = value  # (N, H, W, 3) uint8
                    elif key == STATE and isinstance(ours, list):
                        at = 0
                        for k, width in state_groups:
                            demo["obs"][k] = value[:, at : at + width]
                            at += width
                    elif str(ours).startswith("extra/"):
                        extras[ours] = value
                    else:
                        demo["obs"][ours] = value.reshape(n, -1)
                index = reader.episodes[e]["episode_index"]
                attrs = dict(demo_meta.get(index, {}).get("attrs", {}))
                attrs.setdefault("model_file", "")
                model_xml = attrs.pop("model_file")
                attrs["lerobot_episode_index"] = int(index)
                name = w.add(demo, model_xml, **attrs)
                g = w.data[name]
                g.create_dataset("task_index", data=ep["task_index"].reshape(n).astype(np.int64))
                for k, v in extras.items():
                    g.create_dataset(k, data=v)
                names.append(name)
                frames += n
            masks = rm.get("mask")
            if masks is not None:  # our split, kept through LeRobot
                by_index = {reader.episodes[i]["episode_index"]: m for i, m in enumerate(names)}
                for split in ("train", "valid"):
                    picked = [by_index[i] for i in masks.get(split, []) if i in by_index]
                    w.file.create_dataset(f"mask/{split}", data=np.array(picked, dtype="S"))
                w.close()
            else:
                w.finish(valid_fraction=0.1, seed=0)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "out": str(out),
        "episodes": len(names),
        "frames": frames,
        "fps": reader.fps,
        "obs_keys": sorted(
            k
            for v in mapping.values()
            for k in (v if isinstance(v, list) else [v])
            if k not in ("actions", "rewards", "dones", "states") and not k.startswith("extra/")
        ),
    }


# --------------------------------------------------------------------------- HDF5 -> LeRobot


def infer_fps(env_args: dict[str, Any]) -> int | None:
    """Control rate of the env that recorded the demos: robosuite's `control_freq`, else the
    `render_fps` of our registered env class; None if neither is known."""
    kwargs = env_args.get("env_kwargs", {})
    if "control_freq" in kwargs:
        return int(kwargs["control_freq"])
    name = env_args.get("env_name", "")
    try:
        import gymnasium as gym

        import envs  # noqa: F401  (registers ttm/... ids)

        spec = gym.spec(name)
        cls = gym.envs.registration.load_env_creator(spec.entry_point)
        fps = getattr(cls, "metadata", {}).get("render_fps")
        return int(fps) if fps else None
    except Exception:
        return None


def import_lerobot_dataset() -> type:
    """LeRobot's LeRobotDataset class; ConvertError saying where it runs if it cannot import."""
    try:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset
    except Exception as e:  # ImportError, or torchvision's RuntimeError on a CPU-only torch
        raise ConvertError(
            "hdf5-to-lerobot writes with LeRobot's own writer (lerobot==0.4.4), which cannot be "
            f"imported here ({type(e).__name__}: {' '.join(str(e).split())[:200]}). Run it in "
            "the LeRobot venv that scripts/lerobot_check.sh builds (LeRobot 0.4.4 imports "
            "torchvision, whose torch-2.13 build on PyPI needs a CUDA torch)"
        ) from e
    return LeRobotDataset


def hdf5_to_lerobot(
    path: str | Path,
    root: str | Path,
    *,
    repo_id: str,
    images: Literal["video", "image"] | None = None,
    dtype: Literal["float32", "float64"] = "float32",
    state_keys: list[str] | None = None,
    rename: dict[str, str] | None = None,
    fps: int | None = None,
    task: str | None = None,
    vcodec: str = "h264",
    overwrite: bool = False,
) -> dict:
    """Write our HDF5 file `path` as a LeRobotDataset v3 at `root` with LeRobot's writer.

    images: "video" or "image" for every camera; default: as the camera came from LeRobot
    (data.attrs["lerobot"]), else video. state_keys: low-dim keys concatenated (in this order) into observation.state; default:
    every low-dim key but `object`, which becomes observation.environment_state. rename:
    LeRobot feature names to replace, e.g. {"observation.images.corner2": "observation.image"}
    (to match an env's feature names). A file that came from a LeRobot dataset keeps its
    names (data.attrs["lerobot"]) unless renamed."""
    LeRobotDataset = import_lerobot_dataset()
    path, root = Path(path), Path(root)
    if not path.is_file():
        raise ConvertError(f"{path}: no such file (a robomimic-layout HDF5 file)")
    if root.exists():
        if not overwrite:
            raise ConvertError(f"{root} exists; pass --overwrite to replace it")
        shutil.rmtree(root)
    rename = dict(rename or {})
    with h5py.File(path, "r") as f:
        env_args = read_env_args(f)
        names = demo_names(f)
        if not names:
            raise ConvertError(f"{path}: no demos under data/")
        first = read_demo(f, names[0])
        prior = json.loads(f["data"].attrs["lerobot"]) if "lerobot" in f["data"].attrs else None
        masks = {
            s: [m.decode() for m in f[f"mask/{s}"][:]]
            for s in ("train", "valid")
            if f"mask/{s}" in f
        }
        fps = fps or (prior or {}).get("fps") or infer_fps(env_args)
        if not fps:
            raise ConvertError(
                f"{path}: cannot tell the control rate from env_args {env_args.get('env_name')!r}; "
                "pass --fps"
            )
        obs = first["obs"]
        cams = [k for k in obs if k.endswith("_image")]
        lowdim = [k for k in obs if not k.endswith("_image")]
        back = {}  # our key -> LeRobot feature (from the file's LeRobot origin, if any)
        if prior:
            for feat, ours in prior["mapping"].items():
                if isinstance(ours, str):
                    back[ours] = feat
        if state_keys is None:
            if prior and isinstance(prior["mapping"].get(STATE), list):
                state_keys = list(prior["mapping"][STATE])
            elif prior and prior["mapping"].get(STATE) == "state":
                state_keys = ["state"]
            else:
                state_keys = [k for k in lowdim if k != ENV_STATE_KEY]
        missing = [k for k in state_keys if k not in lowdim]
        if missing:
            raise ConvertError(f"{path}: state keys {missing} not in obs; low-dim keys: {lowdim}")
        widths = {k: int(np.prod(obs[k].shape[1:])) for k in lowdim}
        features: dict[str, dict[str, Any]] = {}
        source: dict[str, Any] = {}  # LeRobot feature -> how to get it from a demo
        for k in cams:
            feat = back.get(k, image_feature(k))
            h, w_, c = obs[k].shape[1:]
            kind = images or (prior or {}).get("features", {}).get(feat, {}).get("dtype", "video")
            features[feat] = {
                "dtype": kind,
                "shape": (h, w_, c),
                "names": ["height", "width", "channels"],
            }
            source[feat] = ("obs", k)
        if state_keys:
            names_ = (
                prior["features"][STATE]["names"]
                if prior and state_keys == ["state"] and STATE in prior["features"]
                else state_names(state_keys, widths)
            )
            features[STATE] = {"dtype": dtype, "shape": (sum(widths[k] for k in state_keys),)}
            features[STATE]["names"] = names_
            source[STATE] = ("state", state_keys)
        for k in lowdim:
            if k in state_keys:
                continue
            feat = back.get(k, ENV_STATE if k == ENV_STATE_KEY else f"observation.{k}")
            features[feat] = {"dtype": dtype, "shape": (widths[k],), "names": None}
            if prior and feat in prior["features"]:
                features[feat]["names"] = prior["features"][feat].get("names")
            source[feat] = ("obs", k)
        A = first["actions"].shape[1]
        action_names = (prior or {}).get("features", {}).get(ACTION, {}).get("names")
        features[ACTION] = {
            "dtype": dtype,
            "shape": (A,),
            "names": action_names or ACTION_NAMES.get(A, [f"a{i}" for i in range(A)]),
        }
        source[ACTION] = ("demo", "actions")
        features[REWARD] = {"dtype": dtype, "shape": (1,), "names": None}
        source[REWARD] = ("demo", "rewards")
        features[DONE] = {"dtype": "bool", "shape": (1,), "names": None}
        source[DONE] = ("demo", "dones")
        S = first["states"].shape[1] if "states" in first and first["states"].ndim == 2 else 0
        if S:
            features[SIM_STATE] = {"dtype": dtype, "shape": (S,), "names": None}
            source[SIM_STATE] = ("demo", "states")
        unknown = [k for k in rename if k not in features]
        if unknown:
            raise ConvertError(f"--rename names {unknown}, not features; have {sorted(features)}")
        features = {rename.get(k, k): v for k, v in features.items()}
        source = {rename.get(k, k): v for k, v in source.items()}
        tasks = (prior or {}).get("tasks") or []
        default_task = task or env_args.get("env_name", path.stem)

        ds = LeRobotDataset.create(
            repo_id=repo_id,
            fps=int(fps),
            features=features,
            root=root,
            robot_type=(prior or {}).get("robot_type") or env_args.get("env_name"),
            use_videos=any(f["dtype"] == "video" for f in features.values()),
            image_writer_threads=0,
            vcodec=vcodec,
        )
        demos_meta = []
        frames = 0
        for e, name in enumerate(tqdm(names, desc="hdf5 -> lerobot", unit="ep")):
            demo = read_demo(f, name)
            n = len(demo["actions"])
            task_index = (
                f["data"][name]["task_index"][:] if "task_index" in f["data"][name] else None
            )
            for t in range(n):
                frame: dict[str, Any] = {}
                for feat, (kind, what) in source.items():
                    if kind == "state":
                        v = np.concatenate([demo["obs"][k][t].reshape(-1) for k in what])
                    elif kind == "obs":
                        v = demo["obs"][what][t]
                    else:
                        v = demo[what][t]
                    ft = features[feat]
                    if ft["dtype"] not in ("image", "video"):
                        v = np.asarray(v, dtype=ft["dtype"]).reshape(ft["shape"])
                    frame[feat] = v
                frame["task"] = (
                    tasks[int(task_index[t])]
                    if task_index is not None and tasks and not task
                    else default_task
                )
                ds.add_frame(frame)
            ds.save_episode()
            attrs = {k: _jsonable(v) for k, v in demo["attrs"].items() if k != "num_samples"}
            attrs.pop("lerobot_episode_index", None)
            demos_meta.append({"name": name, "episode_index": e, "attrs": attrs})
            frames += n
        ds.finalize()
    index_of = {d["name"]: d["episode_index"] for d in demos_meta}
    meta = {
        "env_args": env_args,
        "mask": {s: [index_of[m] for m in ms if m in index_of] for s, ms in masks.items()},
        "demos": demos_meta,
    }
    (root / ROBOMIMIC_META).write_text(json.dumps(meta) + "\n")
    return {
        "root": str(root),
        "repo_id": repo_id,
        "episodes": len(names),
        "frames": frames,
        "fps": int(fps),
        "features": {k: v["dtype"] for k, v in features.items()},
    }


# --------------------------------------------------------------------------- CLI


@dataclasses.dataclass
class ToHDF5:
    """Convert a local LeRobotDataset v3 into a robomimic-layout HDF5 file (no LeRobot needed)."""

    root: Path
    """the dataset's root directory (holding meta/, data/, videos/)"""
    out: Path
    """output HDF5 file"""
    overwrite: bool = False
    """replace an existing output file"""


@dataclasses.dataclass
class ToLeRobot:
    """Convert a robomimic-layout HDF5 file into a LeRobotDataset v3 (with LeRobot's writer)."""

    path: Path
    """input HDF5 file (ttm-collect's, or robomimic's)"""
    root: Path
    """output dataset root; pass it to lerobot-train as --dataset.root"""
    repo_id: str = "local/ttm"
    """the dataset's repo id (a name only: nothing is uploaded); lerobot-train's --dataset.repo_id"""
    images: Literal["video", "image"] | None = None
    """video: LeRobot's mp4 (small, lossy); image: PNG inside the parquet files (lossless);
    default: as each camera came from LeRobot, else video"""
    dtype: Literal["float32", "float64"] = "float32"
    """low-dim, action and reward dtype; float64 keeps our values exactly"""
    state_keys: tuple[str, ...] | None = None
    """low-dim keys concatenated into observation.state; default: all but `object`"""
    rename: tuple[str, ...] = ()
    """feature renames OLD=NEW, e.g. observation.images.corner2=observation.image"""
    fps: int | None = None
    """frames per second; default: from the file's env_args"""
    task: str | None = None
    """the language task of every frame; default: the env name"""
    vcodec: str = "h264"
    """LeRobot's video codec: h264 (fast on CPU), hevc or libsvtav1 (LeRobot's default)"""
    overwrite: bool = False
    """replace an existing output directory"""


@dataclasses.dataclass
class PolicyToOurs:
    """Convert a checkpoint of LeRobot's `ttm` policy type (lerobot-train with the plugin) into
    our checkpoint, for ttm-eval, ttm-export and the runtime (no LeRobot needed)."""

    path: Path
    """LeRobot's pretrained_model directory (config.json, model.safetensors, processor files)"""
    out: Path
    """output checkpoint directory"""
    rename: tuple[str, ...] = ()
    """LeRobot feature -> our observation key, FEATURE=KEY, e.g. observation.image=corner2_image
    (default: observation.image -> observation_image, the plugin's names)"""
    dataset: Path | None = None
    """the demonstrations (HDF5, or a LeRobot dataset root written by hdf5-to-lerobot): their
    env_args go beside the checkpoint, so ttm-eval re-creates the env"""
    overwrite: bool = False
    """replace an existing output directory"""


def _pairs(items: tuple[str, ...], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise ConvertError(f"{flag} {item!r}: write OLD=NEW")
        out[old] = new
    return out


def dataset_env_args(path: Path) -> dict[str, Any]:
    """env_args of an HDF5 file, or of a LeRobot dataset root written by hdf5-to-lerobot."""
    if path.is_dir():
        meta = path / ROBOMIMIC_META
        if not meta.is_file():
            raise ConvertError(f"{path}: no {ROBOMIMIC_META} (not written by hdf5-to-lerobot)")
        doc = _read_json(meta)
        env_args = doc.get("env_args") if isinstance(doc, dict) else None
        if not isinstance(env_args, dict):
            raise ConvertError(f"{meta}: holds no env_args")
        return env_args
    if not path.is_file():
        raise ConvertError(f"{path}: no such file or directory")
    try:
        with h5py.File(path, "r") as f:
            return read_env_args(f)
    except (OSError, ValueError) as e:
        raise ConvertError(f"{path}: no env_args to read ({e})") from e


def policy_to_ours(cmd: PolicyToOurs) -> dict[str, Any]:
    from ttm_policy.checkpoint import CheckpointError
    from ttm_policy.lerobot_checkpoint import lerobot_to_checkpoint

    if cmd.out.exists() and not cmd.overwrite:
        raise ConvertError(f"{cmd.out} exists; pass --overwrite to replace it")
    env_args = dataset_env_args(cmd.dataset) if cmd.dataset is not None else None
    try:
        out = lerobot_to_checkpoint(
            cmd.path, cmd.out, rename=_pairs(cmd.rename, "--rename"), env_args=env_args
        )
    except CheckpointError as e:
        raise ConvertError(str(e)) from e
    cfg = json.loads((out / "config.json").read_text())["policy"]
    return {"checkpoint": str(out), "obs_keys": cfg["obs_keys"], "env_args": env_args is not None}


SUBCOMMANDS = {
    "lerobot-to-hdf5": ToHDF5,
    "hdf5-to-lerobot": ToLeRobot,
    "lerobot-policy": PolicyToOurs,
}


def main(argv: list[str] | None = None) -> None:
    import tyro

    cmd = tyro.extras.subcommand_cli_from_dict(
        SUBCOMMANDS,
        args=argv,
        description=__doc__.split("\n")[0],
    )
    try:
        if isinstance(cmd, ToHDF5):
            s = lerobot_to_hdf5(cmd.root, cmd.out, overwrite=cmd.overwrite)
        elif isinstance(cmd, PolicyToOurs):
            s = policy_to_ours(cmd)
        else:
            rename = _pairs(cmd.rename, "--rename")
            s = hdf5_to_lerobot(
                cmd.path,
                cmd.root,
                repo_id=cmd.repo_id,
                images=cmd.images,
                dtype=cmd.dtype,
                state_keys=list(cmd.state_keys) if cmd.state_keys is not None else None,
                rename=rename,
                fps=cmd.fps,
                task=cmd.task,
                vcodec=cmd.vcodec,
                overwrite=cmd.overwrite,
            )
    except ConvertError as e:
        print(f"ttm-convert: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(s, indent=2))


if __name__ == "__main__":
    main()
