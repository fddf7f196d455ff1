"""`ttm-export`: one control step of a policy checkpoint as an ONNX graph,
with a JSON spec, for a robot controller that runs without torch (see `ttm_policy.runtime`).

    ttm-export --checkpoint runs/x/checkpoints/1000 --out exports/x [--format onnx]

Dimensions: B batch (dynamic in the graph; the runtime uses 1), H, W image size, Dl a
low-dim key's width, K action horizon, A action width; state shapes per core below.

The graph is `TTMPolicy.step`, a pure function of tensors:
    inputs   <camera>_image  uint8 (B, H, W, 3)  the raw camera frame (cropped inside)
             <low-dim key>   float32 (B, Dl)     raw robot units (normalised inside)
             task            int64 (B,)          multi-task policies only: the task's index
                                                 in the spec's `task.vocabulary`
             <state name>    the core's state, as below
    outputs  action_chunk    float32 (B, K, A)   robot units, clipped to [-1, 1]; a binary
                                                 gripper's column: the most likely of
                                                 open/close
             new_<state name>                    the state for the next step
             gripper_close_probability  float32 (B, K)  a binary gripper only: P(close),
                                                 which the runtime samples from when the
                                                 spec's action.gripper.sample is true

State tensors: each core declares its state's names and axes (`STATE`, see
ttm_policy/cores.py); the names are the graph's input names. For example:
    ttm             memory (B, M, D) float32
    ttm-memoryless  none: its memory is (B, 0, D)
    lstm            lstm_h, lstm_c (B, L, Hd) float32
    gru             gru_h (B, L, Hd) float32
    transformer     kv_keys, kv_values (B, L, Hh, S, Dh) float32, kv_valid (B, S) bool,
                    kv_pos (B,) int64 (steps since the episode start); S = (window-1)*N
    none            kv_pos only: its KV cache is (B, L, Hh, 0, Dh)
A state tensor with a zero-sized dimension carries no information and is left out of the
graph (and listed under `omitted_state` in the spec): runtimes and accelerators differ in how
they treat empty tensors, and there is nothing to carry. The step rebuilds it inside.

Files written into `--out` (replaced as a whole, atomically):
    policy.onnx               the step graph, weights inside
    policy_spec.json          observation keys, shapes, dtypes; action size, bounds, horizon;
                              state names, shapes, dtypes, initial-value files; control rate;
                              temporal core; sha256 of the checkpoint's weights and of every
                              file here; package version; the export-time parity check; the
                              training env (`env_args`, if the checkpoint has env_args.json)
    init_<state name>.npy     each state tensor's value at an episode start, one sample
                              (B = 1), read with np.load(allow_pickle=False): the learned
                              initial TTM memory is not zeros

A multi-task policy's spec has format_version 3 (`runtime.TASK_SPEC_VERSION`) and a `task`
entry: the input's name, dtype and shape, the `vocabulary` (task names in index order) and
each task's training env (`env_args`, from the checkpoint's task_env_args.json). A
single-task policy's export is what it was before tasks existed: version 2, no task input.

Export checks itself: three streamed steps through ONNX Runtime at batch 1 and 3 must match
PyTorch's `policy.step` within 1e-4, or nothing is written.

How the graph is made: `torch.onnx.export(dynamo=False)` (the TorchScript-based exporter;
the dynamo one needs onnxscript, not a dependency here) traces `policy.step` itself, with a
dynamic batch axis. The model code is written to be traced: no tensor is sized by a Python
int B (a trace would keep it as a constant) and every op has an ONNX form (attention is
plain ops, not nn.MultiheadAttention; no `cummax`, no adaptive pooling). A module that
breaks this fails the check above at batch 1 or 3, and the error says so.
No TorchScript: a TorchScript archive keeps a pickle-format record, and this project loads
no pickle from anyone else (and torch.jit is deprecated upstream). The ONNX export has no
pickle anywhere; `--format` stays so that another pickle-free format can join it.
"""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro
from torch import nn

from ttm_policy import __version__
from ttm_policy.baselines import CausalTransformerCore
from ttm_policy.checkpoint import (
    CONFIG_NAME,
    ENV_ARGS_NAME,
    TASK_ENV_ARGS_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    atomic_directory,
)
from ttm_policy.policy import TTMPolicy, is_image_key
from ttm_policy.runtime import (  # torch-free: the runtime reads the same spec and hashes
    SPEC_FORMAT,
    SPEC_NAME,
    SPEC_VERSION,
    TASK_SPEC_VERSION,
    sha256,
    spec_digest,
)

MODEL_NAMES = {"onnx": "policy.onnx"}
ACTION_OUTPUT = "action_chunk"
GRIPPER_OUTPUT = "gripper_close_probability"  # a binary gripper's P(close), (B, K) float32
TASK_INPUT = "task"  # a multi-task policy's task index, (B,) int64
DEFAULT_HZ = 20.0  # robosuite's and PointCue's control rate
TOLERANCE = 1e-4  # max |ONNX - PyTorch| the export check accepts (actions and float state)
BATCHES = (1, 3)  # batch sizes the export check streams (the graph's batch axis is dynamic)

DTYPES = {torch.float32: "float32", torch.bool: "bool", torch.int64: "int64", torch.uint8: "uint8"}


class ExportError(RuntimeError):
    """The policy cannot be exported as asked; the message says why and what to change."""


def _as_tuple(state) -> tuple[torch.Tensor, ...]:
    return (state,) if isinstance(state, torch.Tensor) else tuple(state)


def _empty(ref: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A zero-sized (B, *shape) tensor, B taken from `ref` (B, ...) so it stays symbolic."""
    z = shape.index(0)
    t = ref.flatten(1)[:, :0].to(dtype)  # (B, 0)
    for _ in range(z):
        t = t.unsqueeze(1)
    for _ in range(len(shape) - z - 1):
        t = t.unsqueeze(-1)
    return t.expand(-1, *shape)  # (B, *shape)


class ControlStep(nn.Module):
    """The graph: (*observations in `obs_keys` order, [task (B,) int64, multi-task only],
    *kept state) -> (action_chunk, *new kept state), by `policy.step` (the policy in eval
    mode)."""

    def __init__(self, policy: TTMPolicy):
        super().__init__()
        cfg = policy.cfg
        if cfg.sample_actions and cfg.head in ("gmm", "discrete"):
            raise ExportError(
                f"PolicyConfig.sample_actions=True: a sampling {cfg.head} head has no "
                "deterministic graph; export with sample_actions=False (the most likely action)"
            )
        if isinstance(policy.core, CausalTransformerCore) and policy.core.cfg.window is None:
            raise ExportError(
                "transformer.window=None keeps every past step (a cache that grows without "
                "bound); a controller needs a fixed-size state: train with a window"
            )
        if policy.training:
            raise ExportError("the policy is in training mode (dropout): call policy.eval()")
        if cfg.tasks and TASK_INPUT in cfg.obs_keys:
            raise ExportError(
                f"observation key {TASK_INPUT!r} would share its name with the task input of "
                "the multi-task graph: rename the key"
            )
        self.obs_keys = cfg.obs_keys
        self.n_task = 1 if cfg.tasks else 0  # graph inputs for the task
        # A binary gripper: the graph gives the most likely chunk and P(close); the runtime
        # draws open/close from it when the policy samples (as `policy.step` does in torch).
        self.gripper = bool(cfg.binary_gripper) and cfg.head == "continuous"
        self.policy = policy
        init = policy.init_state(1)
        self.single = isinstance(init, torch.Tensor)
        init = _as_tuple(init)
        self.state_axes = type(policy.core).STATE  # name -> axes, declared by the core
        self.state_names = tuple(self.state_axes)
        self.kept = tuple(i for i, s in enumerate(init) if s.numel() > 0)
        self.empty = {
            i: (tuple(s.shape[1:]), s.dtype) for i, s in enumerate(init) if s.numel() == 0
        }

    @property
    def kept_names(self) -> tuple[str, ...]:
        return tuple(self.state_names[i] for i in self.kept)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = len(self.obs_keys)
        obs = dict(zip(self.obs_keys, inputs[:n]))
        task = inputs[n] if self.n_task else None  # (B,) int64
        given = iter(inputs[n + self.n_task :])
        state = [
            _empty(inputs[0], *self.empty[i]) if i in self.empty else next(given)
            for i in range(len(self.state_names))
        ]
        chunk, new, *prob = self.policy.step(
            obs,
            state[0] if self.single else tuple(state),
            task,
            sample=False,
            gripper_probability=self.gripper,
        )
        new = _as_tuple(new)
        return (chunk, *(new[i] for i in self.kept), *prob)  # (B, K, A), new state, (B, K)


def example_inputs(policy: TTMPolicy, batch: int, seed: int = 0) -> list[torch.Tensor]:
    """Random observations in the graph's order: uint8 images, low-dim values inside the
    training range (the normalisation's [min, max])."""
    cfg, g = policy.cfg, torch.Generator().manual_seed(seed)
    out = []
    for k in cfg.obs_keys:
        if is_image_key(k):
            S = cfg.image_size
            out.append(torch.randint(0, 256, (batch, S, S, 3), dtype=torch.uint8, generator=g))
        else:
            r = policy.normalizer.obs[k]
            u = torch.rand(batch, cfg.lowdim_dims[k], generator=g)
            out.append((r.min + u * (r.max - r.min)).float())  # (B, Dl)
    return out


def example_task(policy: TTMPolicy, batch: int, seed: int = 0) -> list[torch.Tensor]:
    """The task input of a multi-task graph, [(B,) int64] (rows cycle through the tasks, from
    `seed` on); [] for a single-task policy."""
    J = len(policy.cfg.tasks)
    return [(torch.arange(batch) + seed) % J] if J else []


def initial_state(step: ControlStep, policy: TTMPolicy, batch: int) -> list[torch.Tensor]:
    """The kept state tensors at an episode start, (batch, ...) each."""
    init = _as_tuple(policy.init_state(batch))
    return [init[i].detach().clone() for i in step.kept]


@torch.no_grad()
def _check(
    policy: TTMPolicy, step: ControlStep, run, batches: tuple[int, ...], steps: int = 3
) -> dict:
    """Stream `steps` random observations through PyTorch's `policy.step` and through `run`
    (the exported graph) at each batch size: the largest absolute differences of actions
    and state."""
    worst = {"action": 0.0, "state": 0.0}
    for batch in batches:
        state_ref = policy.init_state(batch)
        state = initial_state(step, policy, batch)
        for t in range(steps):
            obs = example_inputs(policy, batch, seed=t + 1)
            task = example_task(policy, batch, seed=t)
            chunk_ref, state_ref, *prob_ref = policy.step(
                dict(zip(policy.cfg.obs_keys, obs)),
                state_ref,
                *task,
                sample=False,
                gripper_probability=step.gripper,
            )
            chunk, *state = run([*obs, *task], state)
            prob = [state.pop()] if step.gripper else []  # the last output
            if step.gripper:  # P(close) (B, K) is checked with the action (B, K, A)
                chunk = torch.cat([chunk, prob[0].unsqueeze(-1)], -1)
                chunk_ref = torch.cat([chunk_ref, prob_ref[0].unsqueeze(-1)], -1)
            ref = _as_tuple(state_ref)
            outputs = [chunk_ref, chunk, *state, *(ref[i] for i in step.kept)]
            if not all(torch.isfinite(x).all() for x in outputs if x.is_floating_point()):
                # max(0.0, nan) is 0.0: without this a NaN policy would pass the check below
                raise ExportError(
                    "the policy gives non-finite actions or state on in-range inputs (PyTorch "
                    "or ONNX); a diverged checkpoint cannot be exported"
                )
            worst["action"] = max(worst["action"], (chunk - chunk_ref).abs().max().item())
            for i, s in zip(step.kept, state):
                worst["state"] = max(
                    worst["state"], (s.double() - ref[i].double()).abs().max().item()
                )
    if not worst["action"] <= TOLERANCE or not worst["state"] <= TOLERANCE:
        raise ExportError(
            f"the exported graph departs from PyTorch's policy.step: max |diff| action "
            f"{worst['action']:.3g}, state {worst['state']:.3g} (tolerance {TOLERANCE})"
        )
    return {"steps": steps, "batches": list(batches), "max_abs_diff": worst, "tolerance": TOLERANCE}


class _Tracing:
    """No autograd, and tracer / deprecation warnings kept quiet."""

    def __enter__(self):
        self.warnings = warnings.catch_warnings()
        self.warnings.__enter__()
        warnings.simplefilter("ignore")
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()

    def __exit__(self, *exc):
        self.no_grad.__exit__(*exc)
        self.warnings.__exit__(*exc)


def _traced(step: ControlStep, policy: TTMPolicy, write, check) -> dict:
    """Trace with `write(args)` at batch 2 (so no size-1 dimension is taken for a broadcast
    one), then `check()` the graph at batch 1 and 3; any failure is an ExportError."""
    args = (*example_inputs(policy, 2), *example_task(policy, 2), *initial_state(step, policy, 2))
    try:
        with _Tracing():
            write(args)
        return {**check(), "batch": "dynamic"}
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(
            f"export of the {policy.cfg.core} policy failed: {type(e).__name__}: "
            f"{str(e)[:500]} (an op without an ONNX form: write it in ops that have one; a "
            "shape error at batch 1 or 3: some module sizes a tensor by a Python int B, e.g. "
            "view(B, ...) or expand(x.shape[0], ...): use flatten/unflatten, expand(-1, ...), "
            "*_like)"
        ) from e


def _write_onnx(step: ControlStep, policy: TTMPolicy, path: Path, opset: int) -> dict:
    import onnx
    import onnxruntime as ort

    names = step.kept_names
    inputs = [*policy.cfg.obs_keys, *([TASK_INPUT] if step.n_task else []), *names]
    outputs = [ACTION_OUTPUT, *(f"new_{n}" for n in names), *([GRIPPER_OUTPUT] * step.gripper)]

    def write(args):
        # The TorchScript-based exporter: the dynamo one needs onnxscript, not a dependency.
        torch.onnx.export(
            step,
            args,
            str(path),
            dynamo=False,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={n: {0: "batch"} for n in inputs + outputs},
            opset_version=opset,
            do_constant_folding=True,
        )
        onnx.checker.check_model(str(path), full_check=True)

    def check():
        options = ort.SessionOptions()
        options.log_severity_level = 4  # quiet: a failure raises, with its message
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def run(obs, state):
            feed = {n: x.numpy() for n, x in zip(inputs, [*obs, *state])}
            return [torch.from_numpy(y) for y in session.run(outputs, feed)]

        return _check(policy, step, run, BATCHES)

    return _traced(step, policy, write, check)


def _control_hz(checkpoint: Path, override: float | None) -> float:
    if override is not None:
        return float(override)
    doc = json.loads((checkpoint / CONFIG_NAME).read_text())
    return float(doc.get("control_hz", DEFAULT_HZ))


def _env_args(checkpoint: Path, name: str = ENV_ARGS_NAME) -> dict | None:
    """The training data's env (`env_args.json`, written by ttm-train), so a simulator-backed
    controller can make the same env; None if the checkpoint has none. CheckpointError if
    it is not a JSON object. (`name`: task_env_args.json, a multi-task run's {task: env_args}.)"""
    path = checkpoint / name
    if not path.is_file():
        return None
    try:
        env_args = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{path}: not valid JSON ({e}); copy it from the run's dataset (data attribute "
            "env_args) or delete it to export without an env description"
        ) from e
    if not isinstance(env_args, dict):
        raise CheckpointError(
            f"{path}: expected a JSON object (env_name, env_kwargs, ...), got "
            f"{type(env_args).__name__}"
        )
    return env_args


def _gripper_spec(policy: TTMPolicy, step: ControlStep) -> dict:
    """A binary gripper's entry of the spec's action: where its probability comes out, its
    column, its open and close values in robot units, and whether the policy samples."""
    if not step.gripper:
        return {}
    A = policy.cfg.action_dim
    ends = torch.tensor([[-1.0] * A, [1.0] * A])  # normalised open / close
    values = policy.normalizer.action.unnormalize(ends).clamp(-1.0, 1.0)[:, -1].tolist()
    return {
        "gripper": {
            "probability_output": GRIPPER_OUTPUT,
            "column": A - 1,
            "open": values[0],
            "close": values[1],
            "sample": bool(policy.cfg.sample_actions),
            "meaning": f"{ACTION_OUTPUT}[..., column] is the most likely of open/close; with "
            "`sample` a runtime sets it to `close` with probability "
            f"{GRIPPER_OUTPUT} (B, K), else `open`, as the policy was evaluated",
        }
    }


def _spec(policy: TTMPolicy, step: ControlStep, files: dict, **extra) -> dict:
    cfg = policy.cfg
    observations = []
    for k in cfg.obs_keys:
        if is_image_key(k):
            S = cfg.image_size
            observations.append(
                {
                    "name": k,
                    "kind": "image",
                    "shape": [S, S, 3],
                    "dtype": "uint8",
                    "crop": cfg.crop_size,
                }
            )
        else:
            observations.append(
                {"name": k, "kind": "lowdim", "shape": [cfg.lowdim_dims[k]], "dtype": "float32"}
            )
    init = _as_tuple(policy.init_state(1))
    state, omitted = [], []
    for i, (name, s) in enumerate(zip(step.state_names, init)):
        entry = {
            "name": name,
            "axes": step.state_axes[name],
            "shape": list(s.shape[1:]),
            "dtype": DTYPES[s.dtype],
        }
        if i in step.kept:
            init_file = f"init_{name}.npy"
            state.append({**entry, "output": f"new_{name}", "init_file": init_file})
            files[init_file] = None
        else:
            omitted.append({**entry, "reason": "zero-sized: carries nothing, rebuilt inside"})
    task = {}
    if cfg.tasks:  # the task input; its env_args come in `extra`
        task = {
            "task": {
                "name": TASK_INPUT,
                "dtype": "int64",
                "shape": [],
                "vocabulary": list(cfg.tasks),
                "meaning": "the index in `vocabulary` of the task the policy is doing",
                "env_args": extra.pop("task_env_args", None),
            }
        }
    return {
        "format": SPEC_FORMAT,
        "format_version": TASK_SPEC_VERSION if cfg.tasks else SPEC_VERSION,
        "package_version": __version__,
        "temporal_core": cfg.core,
        "batch_axis": "every input and output has a leading batch axis B (dynamic); shapes "
        "below are per sample",
        "observations": observations,
        **task,
        "action": {
            "name": ACTION_OUTPUT,
            "dim": cfg.action_dim,
            "horizon": cfg.action_horizon,
            "low": [-1.0] * cfg.action_dim,
            "high": [1.0] * cfg.action_dim,
            "units": "robot units (un-normalised), clipped to [low, high]",
            "chunk_execution": cfg.chunk_execution,
            "ensemble_decay": cfg.ensemble_decay,
            **_gripper_spec(policy, step),
        },
        "state": state,
        "omitted_state": omitted,
        "policy_config": cfg.to_dict(),
        **extra,
    }


def export(
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    format: Literal["onnx"] = "onnx",
    *,
    control_hz: float | None = None,
    opset: int = 17,
) -> Path:
    """Export the checkpoint in `checkpoint_dir` (config.json + model.safetensors) into
    `out_dir` (replaced atomically); returns the path of the graph file."""
    checkpoint, out = Path(checkpoint_dir), Path(out_dir)
    if format not in MODEL_NAMES:
        raise ExportError(f"format={format!r}: choose one of {sorted(MODEL_NAMES)}")
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / SPEC_NAME).exists())
    ):
        raise ExportError(
            f"{out}: exists and is not an export directory (no {SPEC_NAME}); it would be "
            "replaced as a whole: choose a new or empty --out"
        )
    policy = TTMPolicy.from_pretrained(checkpoint).float().eval()
    bad = [
        n
        for n, t in policy.state_dict().items()
        if t.is_floating_point() and not t.isfinite().all()
    ]
    if bad:
        raise ExportError(
            f"{checkpoint / WEIGHTS_NAME}: non-finite values in {len(bad)} tensors, first "
            f"{bad[0]!r}: the run diverged; export an earlier checkpoint"
        )
    env_args = _env_args(checkpoint)  # a damaged file fails here, before any work
    task_env_args = _env_args(checkpoint, TASK_ENV_ARGS_NAME) if policy.cfg.tasks else None
    step = ControlStep(policy)
    model_name = MODEL_NAMES[format]
    with atomic_directory(out) as tmp:
        check = _write_onnx(step, policy, tmp / model_name, opset)
        files: dict[str, str | None] = {model_name: None}
        spec = _spec(
            policy,
            step,
            files,
            model_format=format,
            model_file=model_name,
            opset=opset,
            control_hz=_control_hz(checkpoint, control_hz),
            checkpoint={
                "path": str(checkpoint.resolve()),
                "weights_file": WEIGHTS_NAME,
                "weights_sha256": sha256(checkpoint / WEIGHTS_NAME),
            },
            export_check=check,
            env_args=env_args,
            **({"task_env_args": task_env_args} if policy.cfg.tasks else {}),
        )
        for entry, s in zip(spec["state"], initial_state(step, policy, 1)):
            np.save(tmp / entry["init_file"], s[0].numpy(), allow_pickle=False)  # one sample
        spec["files_sha256"] = {name: sha256(tmp / name) for name in files}
        spec["spec_sha256"] = spec_digest(spec)
        (tmp / SPEC_NAME).write_text(json.dumps(spec, indent=2) + "\n")
    return out / model_name


@dataclass
class Args:
    """Export one control step of a checkpoint for a robot controller."""

    checkpoint: Path
    """checkpoint directory (config.json + model.safetensors), e.g. runs/x/checkpoints/1000"""
    out: Path
    """output directory (created, or replaced if it holds an earlier export)"""
    format: Literal["onnx"] = "onnx"
    """onnx, for `ttm_policy.runtime` (numpy + onnxruntime); no pickle-based formats (TorchScript)"""
    control_hz: float | None = None
    """control rate written to the spec; None: the checkpoint's `control_hz`, else 20"""
    opset: int = 17
    """ONNX opset (17: LayerNorm is one op)"""


def main(argv: list[str] | None = None) -> None:
    args = tyro.cli(Args, args=argv)
    try:
        path = export(
            args.checkpoint, args.out, args.format, control_hz=args.control_hz, opset=args.opset
        )
    except (FileNotFoundError, CheckpointError, ExportError) as e:
        print(f"ttm-export: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    spec = json.loads((args.out / SPEC_NAME).read_text())
    sizes = ", ".join(
        f"{n} {(args.out / n).stat().st_size / 1024:.0f} KiB" for n in spec["files_sha256"]
    )
    diff = spec["export_check"]["max_abs_diff"]
    print(
        f"exported {spec['temporal_core']} policy to {path} ({sizes}); state "
        f"{[s['name'] for s in spec['state']]}; export check max |diff| action "
        f"{diff['action']:.2e}, state {diff['state']:.2e}"
    )


if __name__ == "__main__":
    main()
