"""Run an exported policy on a robot: numpy + onnxruntime only (importing this imports no torch).

    policy = OnnxPolicy("exports/lift", safe_action="zeros")   # raises PolicyLoadError if bad
    policy.reset()                                             # at every episode start
    action = policy(obs)          # each control tick: (A,) float32 in [low, high]; never raises
    if policy.last_error is not None: ...                      # this tick got the safe action

Reads what `ttm-export` writes (see ttm_policy/export.py): `policy_spec.json`, `policy.onnx`
and `init_<state>.npy`, and nothing else.

A binary gripper (an export whose spec's action has a `gripper` entry) is, as in training
and `ttm-eval`, drawn each tick: `close` with the probability the graph gives, from a numpy
generator seeded by `OnnxPolicy(dir, seed=...)`, when the spec says the policy samples (the
presets do); `OnnxPolicy(dir, sample=False)` takes the most likely instead.

A multi-task export (spec version 3, a `task` entry with the task names) runs the task it is
told: `OnnxPolicy(dir, task="MW-reach")`, `policy.reset(task="MW-push")` or
`policy.set_task(...)`, by name or index; the task stays set across resets. A tick with no task
set gets the safe action (and `last_error` says so). A single-task export takes no task. Dimensions: B batch (1 here), K action horizon,
A action width; observation and state shapes are per sample, as the spec lists them.

Every tick the graph runs once (the core sees every frame) and returns a chunk (K, A); the
chunk is executed as `TTMPolicy.select_action` does: `queue` runs a chunk's K actions one per
tick and takes a new chunk when the queue is empty; `ensemble` averages the last K chunks'
predictions for this tick with ACT's weights exp(-m i), i = 0 for the oldest.

Faults. In the control loop `__call__` never raises. If the observation is invalid (a key
missing, a wrong shape or dtype, a non-finite value), or the graph fails or gives a
non-finite action or state, it returns the safe action, sets `last_error` (a message naming
every problem), counts `fault_count` and `consecutive_faults`, and advances nothing: the
recurrent state and the action queue stay as they were, so the next good tick continues as
if the faulty one had not happened. The safe action is `zeros` (for OSC_POSE deltas: do not
move; gripper command 0) or `hold` (repeat the last good action; zeros before the first one
after a reset; for delta actions this keeps moving: choose it only for absolute targets).
A good tick sets `last_error = None` and `consecutive_faults = 0`. Extra observation keys
are ignored; low-dim values of any floating dtype are cast to float32.

Every action that leaves `__call__` is finite and inside the spec's [low, high]; one that is
not (whatever produced it) is replaced by the safe action and reported in `last_error`.

Load-time problems (a missing, corrupt or mismatched file, a spec field of the wrong type or
value: non-finite or crossed action bounds, shapes or dtypes that disagree with the graph)
raise `PolicyLoadError` naming the file and the field. The spec is sealed like the other
files: `spec_sha256` is the sha256 of the spec's canonical JSON without that entry, so a
hand-edited or damaged spec is refused (re-export rather than edit).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from ttm_policy.jsonfile import read_json

# Kept equal to ttm_policy.export's (which imports torch, so it is not imported here).
SPEC_NAME = "policy_spec.json"
SPEC_FORMAT = "ttm_policy.export"
SPEC_VERSION = 2  # 2: the spec carries spec_sha256
TASK_SPEC_VERSION = 3  # 3: version 2 with a task input (a multi-task policy)
ONNX_TYPES = {
    "float32": "tensor(float)",
    "uint8": "tensor(uint8)",
    "bool": "tensor(bool)",
    "int64": "tensor(int64)",
}


class PolicyLoadError(RuntimeError):
    """An export directory that cannot be run; the message names the file and the problem."""


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (export writes these, load checks them)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def spec_digest(spec: dict[str, Any]) -> str:
    """sha256 of the spec's canonical JSON (sorted keys, no spaces), `spec_sha256` left out."""
    body = {k: v for k, v in spec.items() if k != "spec_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_file_name(x: Any) -> bool:
    """A plain name inside the export directory (no path, so no file outside it is read)."""
    return isinstance(x, str) and x not in ("", ".", "..") and "/" not in x and "\\" not in x


def _check_fields(spec: dict[str, Any]) -> str | None:
    """The first field of the spec with a wrong type or value, as a message; None if all
    are right. Shapes and dtypes against the graph are checked later, on the graph."""

    def shape_ok(shape: Any) -> bool:
        return isinstance(shape, list) and all(_is_int(d) and d > 0 for d in shape)

    if not _is_file_name(spec["model_file"]):
        return f"model_file {spec['model_file']!r}: a file name in the export directory"
    names: set[str] = set()
    task = spec.get("task")
    if (task is not None) != (spec["format_version"] == TASK_SPEC_VERSION):
        return (
            f"task: format_version {TASK_SPEC_VERSION} (a multi-task policy) and a `task` entry "
            "go together"
        )
    if task is not None:
        vocabulary = task.get("vocabulary") if isinstance(task, dict) else None
        if not isinstance(task, dict) or not isinstance(task.get("name"), str) or not task["name"]:
            return f"task {task!r}: an entry with a non-empty `name`"
        names.add(task["name"])
        if task.get("dtype") != "int64" or task.get("shape") != []:
            return f"task: dtype {task.get('dtype')!r}, shape {task.get('shape')!r}: int64, []"
        if (
            not isinstance(vocabulary, list)
            or not vocabulary
            or not all(isinstance(t, str) and t for t in vocabulary)
            or len(set(vocabulary)) != len(vocabulary)
        ):
            return f"task.vocabulary {vocabulary!r}: a list of distinct task names"
    for i, o in enumerate(spec["observations"]):
        where = f"observations[{i}]"
        if not isinstance(o.get("name"), str) or not o["name"] or o["name"] in names:
            return f"{where}.name {o.get('name')!r}: a non-empty string, unique"
        names.add(o["name"])
        if o["kind"] not in ("image", "lowdim"):
            return f"{where}.kind {o['kind']!r}: 'image' or 'lowdim'"
        if not shape_ok(o["shape"]):
            return f"{where}.shape {o['shape']!r}: a list of positive integers"
        want = "uint8" if o["kind"] == "image" else "float32"
        if o["dtype"] != want:
            return f"{where}.dtype {o['dtype']!r}: {o['kind']} observations are {want}"
        if o["kind"] == "image" and (len(o["shape"]) != 3 or o["shape"][2] != 3):
            return f"{where}.shape {o['shape']!r}: an image is (H, W, 3)"
    for i, st in enumerate(spec["state"]):
        where = f"state[{i}]"
        for key in ("name", "output"):
            if not isinstance(st[key], str) or not st[key] or st[key] in names:
                return f"{where}.{key} {st[key]!r}: a non-empty string, unique"
            names.add(st[key])
        if not _is_file_name(st["init_file"]):
            return f"{where}.init_file {st['init_file']!r}: a file name in the export directory"
        if not shape_ok(st["shape"]):
            return f"{where}.shape {st['shape']!r}: a list of positive integers"
        if st["dtype"] not in ONNX_TYPES:
            return f"{where}.dtype {st['dtype']!r}: one of {sorted(ONNX_TYPES)}"
    a = spec["action"]
    if not isinstance(a["name"], str) or not a["name"] or a["name"] in names:
        return f"action.name {a['name']!r}: a non-empty string, unique"
    for key in ("dim", "horizon"):
        if not _is_int(a[key]) or a[key] < 1:
            return f"action.{key} {a[key]!r}: a positive integer"
    if a["chunk_execution"] not in ("queue", "ensemble"):
        return f"action.chunk_execution {a['chunk_execution']!r}: 'queue' or 'ensemble'"
    decay = a.get("ensemble_decay", 0.01)
    if not _is_number(decay) or decay < 0:
        return f"action.ensemble_decay {decay!r}: a finite number >= 0"
    for key in ("low", "high"):
        b = a[key]
        if not isinstance(b, list) or len(b) != a["dim"] or not all(map(_is_number, b)):
            return f"action.{key} {b!r}: a list of dim={a['dim']} finite numbers"
    crossed = [i for i, (lo, hi) in enumerate(zip(a["low"], a["high"])) if not lo < hi]
    if crossed:
        return f"action.low/high: low >= high on axes {crossed}"
    no_zero = [i for i, (lo, hi) in enumerate(zip(a["low"], a["high"])) if not lo <= 0.0 <= hi]
    if no_zero:  # the safe action (and `hold` before the first good tick) is zeros
        return f"action.low/high: axes {no_zero} exclude 0, the runtime's safe action"
    g = a.get("gripper")
    if g is not None:
        if not isinstance(g, dict) or not {"probability_output", "column", "open", "close"} <= set(
            g
        ):
            return "action.gripper: an object with probability_output, column, open, close"
        if not isinstance(g["probability_output"], str) or g["probability_output"] in names:
            return f"action.gripper.probability_output {g['probability_output']!r}: a unique name"
        if not _is_int(g["column"]) or not 0 <= g["column"] < a["dim"]:
            return f"action.gripper.column {g['column']!r}: an axis of the action"
        lo, hi = a["low"][g["column"]], a["high"][g["column"]]
        for key in ("open", "close"):
            if not _is_number(g[key]) or not lo <= g[key] <= hi:
                return f"action.gripper.{key} {g[key]!r}: a number inside [low, high] of its axis"
        if not isinstance(g.get("sample", False), bool):
            return f"action.gripper.sample {g['sample']!r}: true or false"
    if not _is_number(spec["control_hz"]) or spec["control_hz"] <= 0:
        return f"control_hz {spec['control_hz']!r}: a finite number > 0"
    if not all(_is_file_name(k) and isinstance(v, str) for k, v in spec["files_sha256"].items()):
        return "files_sha256: a map from file names in the export directory to hex digests"
    return None


def load_spec(directory: str | Path) -> dict[str, Any]:
    """Read and check `directory/policy_spec.json` (structure and versions, not the files)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PolicyLoadError(f"{directory}: no such export directory (written by ttm-export)")
    path = directory / SPEC_NAME
    spec = read_json(path, "an export directory", PolicyLoadError, missing=PolicyLoadError)
    if not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT:
        raise PolicyLoadError(f"{path}: not a policy spec (expected format {SPEC_FORMAT!r})")
    if spec.get("format_version") not in (SPEC_VERSION, TASK_SPEC_VERSION):
        raise PolicyLoadError(
            f"{path}: format_version {spec.get('format_version')!r}; this runtime reads "
            f"{SPEC_VERSION} and {TASK_SPEC_VERSION}: re-export with this package's ttm-export"
        )
    if spec.get("model_format") != "onnx":
        raise PolicyLoadError(
            f"{path}: model_format {spec.get('model_format')!r}; the runtime runs ONNX: "
            "export with --format onnx"
        )
    try:
        digest = spec_digest(spec)
    except ValueError:  # NaN or Infinity in the JSON
        digest = None
    if digest is None or spec.get("spec_sha256") != digest:
        raise PolicyLoadError(
            f"{path}: spec_sha256 does not match the spec's content: the file was edited or "
            "damaged; re-export rather than edit it"
        )
    need = {
        "observations": list,
        "action": dict,
        "state": list,
        "model_file": str,
        "files_sha256": dict,
        "control_hz": (int, float),
        "temporal_core": str,
    }
    for key, kind in need.items():
        if not isinstance(spec.get(key), kind):
            raise PolicyLoadError(f"{path}: entry {key!r} missing or of the wrong type")
    try:
        for o in spec["observations"]:
            o["name"], o["shape"], o["dtype"], o["kind"]  # noqa: B018
        for s in spec["state"]:
            s["name"], s["output"], s["shape"], s["dtype"], s["init_file"]  # noqa: B018
        a = spec["action"]
        a["name"], a["dim"], a["horizon"], a["low"], a["high"], a["chunk_execution"]  # noqa: B018
        problem = _check_fields(spec)
    except (KeyError, TypeError, AttributeError) as e:
        raise PolicyLoadError(f"{path}: an observation, state or action entry lacks {e}") from e
    if problem:
        raise PolicyLoadError(f"{path}: {problem}")
    return spec


def _onnx_shape(arg) -> tuple[Any, list]:
    """ORT's (batch, per-sample shape) of a graph input/output."""
    return arg.shape[0], list(arg.shape[1:])


class OnnxPolicy:
    """An exported policy with its recurrent state and action queue, for one robot (B = 1)."""

    def __init__(
        self,
        directory: str | Path,
        *,
        safe_action: Literal["zeros", "hold"] = "zeros",
        threads: int = 1,  # ORT intra-op threads; 1 gave the steadiest latency (ttm-bench)
        providers: list[str] | None = None,  # default: CPU
        task: str | int | None = None,  # a multi-task export's task (see `set_task`)
        sample: bool | None = None,  # a binary gripper drawn from P(close); None: the spec's
        seed: int | None = None,  # of those draws (numpy's default_rng)
    ):
        if safe_action not in ("zeros", "hold"):
            raise ValueError(f"safe_action={safe_action!r}: choose 'zeros' or 'hold'")
        self.directory = Path(directory)
        self.safe_action = safe_action
        self.spec = spec = load_spec(self.directory)
        spec_path = self.directory / SPEC_NAME
        for name, digest in spec["files_sha256"].items():
            f = self.directory / name
            if not f.is_file():
                raise PolicyLoadError(f"{f}: missing (listed in {spec_path})")
            if sha256(f) != digest:
                raise PolicyLoadError(
                    f"{f}: sha256 does not match {spec_path}: the file is corrupt or from "
                    "another export; re-export"
                )
        model = self.directory / spec["model_file"]
        uncovered = {spec["model_file"], *(s["init_file"] for s in spec["state"])}
        uncovered -= set(spec["files_sha256"])
        if uncovered:
            raise PolicyLoadError(f"{spec_path}: files_sha256 does not cover {sorted(uncovered)}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        if threads > 1:  # idle workers must not spin: a controller shares its CPU with drivers
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(model), options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as e:
            raise PolicyLoadError(f"{model}: onnxruntime cannot load it ({e})") from e

        self.obs_specs = {o["name"]: o for o in spec["observations"]}
        self.task_input = spec["task"]["name"] if "task" in spec else None
        self.tasks: tuple[str, ...] = tuple(spec["task"]["vocabulary"]) if "task" in spec else ()
        self._task: int | None = None
        if task is not None:
            self.set_task(task)
        self.state_specs = {s["name"]: s for s in spec["state"]}
        act = spec["action"]
        self.action_name = act["name"]
        self.action_dim, self.horizon = int(act["dim"]), int(act["horizon"])
        self.low = np.asarray(act["low"], np.float32)
        self.high = np.asarray(act["high"], np.float32)
        self.chunk_execution = act["chunk_execution"]
        self.ensemble_decay = float(act.get("ensemble_decay", 0.01))
        self.control_hz = float(spec["control_hz"])
        self.gripper: dict[str, Any] | None = act.get("gripper")
        g = self.gripper or {}
        self.sample = bool(g.get("sample", False) if sample is None else sample) and bool(g)
        self._rng = np.random.default_rng(seed)
        self._check_graph(model)
        self._init = self._load_init()
        self.outputs = [self.action_name, *(s["output"] for s in spec["state"])]
        if self.gripper:
            self.outputs.append(self.gripper["probability_output"])
        self.fault_count = 0
        self.reset()

    # ------------------------------------------------------------------ loading

    def _check_graph(self, model: Path) -> None:
        """The graph's inputs and outputs are the spec's, with its dtypes and shapes."""
        want_in = {n: (o["dtype"], o["shape"]) for n, o in self.obs_specs.items()}
        if self.task_input is not None:
            want_in[self.task_input] = ("int64", [])
        want_in |= {n: (s["dtype"], s["shape"]) for n, s in self.state_specs.items()}
        want_out = {self.action_name: ("float32", [self.horizon, self.action_dim])}
        want_out |= {s["output"]: (s["dtype"], s["shape"]) for s in self.state_specs.values()}
        if self.gripper:
            want_out[self.gripper["probability_output"]] = ("float32", [self.horizon])
        for kind, args, want in (
            ("input", self.session.get_inputs(), want_in),
            ("output", self.session.get_outputs(), want_out),
        ):
            got = {a.name: a for a in args}
            if set(got) != set(want):
                raise PolicyLoadError(
                    f"{model}: graph {kind}s {sorted(got)} do not match {SPEC_NAME}'s "
                    f"{sorted(want)}: the files come from different exports"
                )
            for name, (dtype, shape) in want.items():
                batch, per_sample = _onnx_shape(got[name])
                if got[name].type != ONNX_TYPES.get(dtype) or per_sample != list(shape):
                    raise PolicyLoadError(
                        f"{model}: {kind} {name!r} is {got[name].type} {got[name].shape}, but "
                        f"{SPEC_NAME} says {dtype} (B, {', '.join(map(str, shape))})"
                    )
                if batch != 1 and not isinstance(batch, str):
                    raise PolicyLoadError(f"{model}: {kind} {name!r} has batch size {batch}")

    def _load_init(self) -> dict[str, np.ndarray]:
        init = {}
        for name, s in self.state_specs.items():
            path = self.directory / s["init_file"]
            if not path.is_file():
                raise PolicyLoadError(f"{path}: missing (the initial value of state {name!r})")
            try:
                x = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as e:
                raise PolicyLoadError(f"{path}: not a readable .npy array ({e})") from e
            if x.dtype != np.dtype(s["dtype"]) or list(x.shape) != list(s["shape"]):
                raise PolicyLoadError(
                    f"{path}: holds {x.dtype} {x.shape}, but {SPEC_NAME} says state {name!r} is "
                    f"{s['dtype']} {tuple(s['shape'])}"
                )
            if x.dtype.kind == "f" and not np.isfinite(x).all():
                raise PolicyLoadError(f"{path}: non-finite initial value of state {name!r}")
            init[name] = x
        return init

    # ------------------------------------------------------------------ pure step

    def initial_state(self, batch: int = 1) -> dict[str, np.ndarray]:
        """Each state tensor at an episode start: name -> (batch, *shape)."""
        return {n: np.repeat(x[None], batch, axis=0) for n, x in self._init.items()}

    # ------------------------------------------------------------------ tasks

    def task_index(self, task: str | int) -> int:
        """A task's index in the spec's vocabulary, from its name or index; ValueError for an
        unknown one, or for any task of a single-task export."""
        if not self.tasks:
            raise ValueError(f"task {task!r}: this export is a single-task policy; it takes none")
        if isinstance(task, str):
            if task not in self.tasks:
                raise ValueError(f"task {task!r} is not one of the export's {list(self.tasks)}")
            return self.tasks.index(task)
        if isinstance(task, bool) or not isinstance(task, (int, np.integer)):
            raise ValueError(f"task {task!r}: a name or an index, one of {list(self.tasks)}")
        if not 0 <= int(task) < len(self.tasks):
            raise ValueError(f"task index {task}: the export's tasks are {list(self.tasks)}")
        return int(task)

    def set_task(self, task: str | int | None) -> None:
        """The task the control loop runs from the next tick on (a multi-task export); None:
        none (ticks get the safe action until one is set). ValueError for an unknown task."""
        self._task = None if task is None else self.task_index(task)

    @property
    def task(self) -> str | None:
        """The name of the task set, or None."""
        return None if self._task is None else self.tasks[self._task]

    def step(
        self,
        obs: dict[str, np.ndarray],
        state: dict[str, np.ndarray],
        task: np.ndarray | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The graph itself: obs key -> (B, ...) arrays of the spec's dtypes, state from
        `initial_state(B)` or the previous step, a multi-task export's task indices (B,) ->
        (chunk (B, K, A), new state). A binary gripper's column is the most likely of
        open/close, or with `sample` (the spec's `action.gripper.sample` unless set at load)
        `close` with the probability the graph gives, drawn from this policy's generator
        (`seed`). No checks beyond onnxruntime's own (it raises); no queue."""
        feed = {n: obs[n] for n in self.obs_specs}
        if self.task_input is not None:
            if task is None:
                raise ValueError(f"this export needs the task: indices into {list(self.tasks)}")
            feed[self.task_input] = np.asarray(task, np.int64).reshape(-1)  # (B,)
        feed |= {n: state[n] for n in self.state_specs}
        chunk, *new = self.session.run(self.outputs, feed)
        if self.gripper:
            prob = new.pop()  # (B, K)
            if self.sample:
                g = self.gripper
                close = self._rng.random(prob.shape) < prob
                chunk = chunk.copy()
                chunk[..., g["column"]] = np.where(close, g["close"], g["open"])
        return chunk, dict(zip(self.state_specs, new))

    # ------------------------------------------------------------------ control loop

    def reset(self, task: str | int | None = None) -> None:
        """Start an episode: initial state, empty action queue, no last action. Keeps
        `fault_count`, and the task unless `task` names another (a multi-task export;
        ValueError for an unknown one, before anything is reset)."""
        if task is not None:
            self.set_task(task)
        K, A = self.horizon, self.action_dim
        self._state = self.initial_state(1)
        self._queue = np.zeros((K, A), np.float32)
        self._queue_pos = K  # empty
        self._ens = np.zeros((K, K, A), np.float32)  # slot j: the chunk made j ticks ago
        self._ens_valid = np.zeros(K, bool)
        self._last_action: np.ndarray | None = None
        self.last_error: str | None = None
        self.consecutive_faults = 0
        self.steps = 0  # good ticks since the reset

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A copy of the recurrent state, name -> (1, *shape)."""
        return {n: x.copy() for n, x in self._state.items()}

    def check_observation(self, obs: Any) -> tuple[dict[str, np.ndarray], list[str]]:
        """obs (key -> one sample's array) -> (graph inputs, key -> (1, ...), problems)."""
        if not isinstance(obs, dict):
            return {}, [f"observation must be a dict of arrays, got {type(obs).__name__}"]
        feed, problems = {}, []
        for name, o in self.obs_specs.items():
            want = f"{o['dtype']} {tuple(o['shape'])}"
            if name not in obs:
                problems.append(f"missing {name!r} ({want})")
                continue
            try:
                x = np.asarray(obs[name])
            except Exception as e:  # noqa: BLE001 - anything that is not array-like
                problems.append(f"{name!r}: not an array ({type(e).__name__})")
                continue
            if list(x.shape) != list(o["shape"]):
                problems.append(f"{name!r}: shape {x.shape}, expected {want}")
                continue
            if o["kind"] == "image":
                if x.dtype != np.uint8:
                    problems.append(f"{name!r}: dtype {x.dtype}, expected {want}")
                    continue
            else:
                if x.dtype.kind != "f":
                    problems.append(f"{name!r}: dtype {x.dtype}, expected a floating dtype")
                    continue
                with np.errstate(over="ignore"):  # an overflow becomes inf: reported below
                    x = x.astype(np.float32)
                if not np.isfinite(x).all():
                    bad = np.flatnonzero(~np.isfinite(x)).tolist()
                    problems.append(f"{name!r}: non-finite values at {bad} (as float32)")
                    continue
            feed[name] = np.ascontiguousarray(x)[None]  # (1, ...)
        return feed, problems

    def _execute(self, chunk: np.ndarray):
        """chunk (K, A) of this tick -> (action (A,), the queue/ensemble state to commit)."""
        K = self.horizon
        if self.chunk_execution == "queue":
            queue, pos = (
                (chunk.copy(), 0) if self._queue_pos >= K else (self._queue, self._queue_pos)
            )
            return queue[pos].copy(), (queue, pos + 1)
        ens = np.concatenate([chunk[None], self._ens[:-1]])  # (K, K, A)
        valid = np.concatenate([[True], self._ens_valid[:-1]])  # (K,)
        j = np.arange(K)
        cand = ens[j, j]  # (K, A) this tick's predictions, newest first
        age_rank = np.maximum(valid.sum() - 1 - j, 0).astype(np.float32)  # 0 = oldest valid
        w = np.exp(-self.ensemble_decay * age_rank) * valid  # (K,)
        action = (w[:, None] * cand).sum(0) / w.sum()
        return action.astype(np.float32), (ens, valid)

    def _fault(self, message: str) -> np.ndarray:
        self.last_error = message
        self.fault_count += 1
        self.consecutive_faults += 1
        if self.safe_action == "hold" and self._last_action is not None:
            return self._last_action.copy()
        return np.zeros(self.action_dim, np.float32)

    def __call__(self, obs: dict[str, Any]) -> np.ndarray:
        """One control tick: obs (key -> one sample, images uint8 (H, W, 3), low-dim (Dl,))
        -> action (A,) float32. Never raises; see the module docstring for faults."""
        try:
            feed, problems = self.check_observation(obs)
            if problems:
                return self._fault("invalid observation: " + "; ".join(problems))
            if self.tasks and self._task is None:
                return self._fault(
                    f"no task set: call reset(task=...) or set_task(...) with one of "
                    f"{list(self.tasks)}"
                )
            task = np.array([self._task], np.int64) if self.tasks else None  # (1,)
            chunk, state = self.step(feed, self._state, task)  # (1, K, A)
            if not np.isfinite(chunk).all():
                return self._fault(f"non-finite action from the policy: {chunk[0].tolist()}")
            bad = [n for n, x in state.items() if x.dtype.kind == "f" and not np.isfinite(x).all()]
            if bad:
                return self._fault(f"non-finite values in the new state {bad}")
            action, executed = self._execute(chunk[0])
            action = np.clip(action, self.low, self.high)
            if not np.isfinite(action).all():  # the last gate before the robot
                return self._fault(f"non-finite action after execution: {action.tolist()}")
        except Exception as e:  # noqa: BLE001 - the control loop must not die
            return self._fault(f"{type(e).__name__}: {e}")
        self._state = state
        if self.chunk_execution == "queue":
            self._queue, self._queue_pos = executed
        else:
            self._ens, self._ens_valid = executed
        self._last_action = action
        self.last_error = None
        self.consecutive_faults = 0
        self.steps += 1
        return action.copy()
