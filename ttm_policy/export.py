"""`ttm-export`: one control step of a policy checkpoint as an ONNX graph (or TorchScript),
with a JSON spec, for a robot controller that runs without torch (see `ttm_policy.runtime`).

    ttm-export --checkpoint runs/x/checkpoints/1000 --out exports/x [--format onnx|torchscript]

Dimensions: B batch (dynamic in the graph; the runtime uses 1), H, W image size, Dl a
low-dim key's width, K action horizon, A action width; state shapes per core below.

The graph is `TTMPolicy.step`, a pure function of tensors:
    inputs   <camera>_image  uint8 (B, H, W, 3)  the raw camera frame (cropped inside)
             <low-dim key>   float32 (B, Dl)     raw robot units (normalised inside)
             <state name>    the core's state, as below
    outputs  action_chunk    float32 (B, K, A)   robot units, clipped to [-1, 1]
             new_<state name>                    the state for the next step

State tensors, per temporal core (names are the graph's input names):
    ttm             memory (B, M, D) float32
    ttm-memoryless  none: its memory is (B, 0, D)
    lstm            lstm_h, lstm_c (B, L, Hd) float32
    transformer     kv_keys, kv_values (B, L, Hh, S, Dh) float32, kv_valid (B, S) bool,
                    kv_pos (B,) int64 (steps since the episode start); S = (window-1)*N
    none            kv_pos only: its KV cache is (B, L, Hh, 0, Dh)
A state tensor with a zero-sized dimension carries no information and is left out of the
graph (and listed under `omitted_state` in the spec): runtimes and accelerators differ in how
they treat empty tensors, and there is nothing to carry. The step rebuilds it inside.

Files written into `--out` (replaced as a whole, atomically):
    policy.onnx | policy.pt   the step graph, weights inside
    policy_spec.json          observation keys, shapes, dtypes; action size, bounds, horizon;
                              state names, shapes, dtypes, initial-value files; control rate;
                              temporal core; sha256 of the checkpoint's weights and of every
                              file here; package version; the export-time parity check; the
                              training env (`env_args`, if the checkpoint has env_args.json)
    init_<state name>.npy     each state tensor's value at an episode start, one sample
                              (B = 1), read with np.load(allow_pickle=False): the learned
                              initial TTM memory is not zeros

Export checks itself: three streamed steps through ONNX Runtime at batch 1 and 3 must match
PyTorch's `policy.step` within 1e-4, or nothing is written.

How the graph is made: `torch.onnx.export(dynamo=False)` (the TorchScript-based exporter;
the dynamo one needs onnxscript, not a dependency here) traces `policy.step` on a deep copy
of the policy in which a few modules are swapped for export forms with the same weights and
the same maths, each checked by the parity above:
- the causal Transformer's step (`_OneStepKV`): its general mask uses `cummax`, which ONNX
  lacks; one step with no reset inside needs no such mask;
- code that sizes tensors with a Python int B (`view(B, ...)`, `expand(*x.shape, ...)`,
  nn.MultiheadAttention's `bsz * heads`) is traced with B as a constant; the LSTM step,
  the Transformer block, attention and the GMM mode are rewritten batch-agnostic so the
  batch axis stays dynamic. An ablation module not covered (e.g. `tl-mha`, `linear`
  summarisers) falls back to a batch-1 graph (`export_check.batch` says which); `pool`
  (adaptive pooling) does not export.
TorchScript (`--format torchscript`, secondary): torch.jit.trace of the same step. Its archive
keeps constants in a pickle-format record read by torch's restricted unpickler, and
torch.jit is deprecated upstream; the ONNX export has no pickle anywhere.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
import tyro
from torch import nn

from ttm_policy import __version__
from ttm_policy.baselines import CachedBlock, CausalTransformerCore, LSTMCore, rope
from ttm_policy.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    atomic_directory,
    load_pretrained,
)
from ttm_policy.heads import GMMHead
from ttm_policy.policy import TTMPolicy, is_image_key

SPEC_NAME = "policy_spec.json"
SPEC_FORMAT = "ttm_policy.export"
SPEC_VERSION = 1
MODEL_NAMES = {"onnx": "policy.onnx", "torchscript": "policy.pt"}
ACTION_OUTPUT = "action_chunk"
DEFAULT_HZ = 20.0  # robosuite's and PointCue's control rate
TOLERANCE = 1e-4  # max |ONNX - PyTorch| the export check accepts (actions and float state)

STATE_NAMES = {
    "ttm": ("memory",),
    "ttm-memoryless": ("memory",),
    "lstm": ("lstm_h", "lstm_c"),
    "transformer": ("kv_keys", "kv_values", "kv_valid", "kv_pos"),
    "none": ("kv_keys", "kv_values", "kv_valid", "kv_pos"),
}
STATE_AXES = {
    "memory": "B, M, D",
    "lstm_h": "B, L, Hd",
    "lstm_c": "B, L, Hd",
    "kv_keys": "B, L, Hh, S, Dh",
    "kv_values": "B, L, Hh, S, Dh",
    "kv_valid": "B, S",
    "kv_pos": "B",
}
DTYPES = {torch.float32: "float32", torch.bool: "bool", torch.int64: "int64", torch.uint8: "uint8"}


class ExportError(RuntimeError):
    """The policy cannot be exported as asked; the message says why and what to change."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _as_tuple(state) -> tuple[torch.Tensor, ...]:
    return (state,) if isinstance(state, torch.Tensor) else tuple(state)


def _block(block: CachedBlock, x, pos, ck, cv, allowed):
    """`CachedBlock.forward` (eval) with batch-agnostic reshapes: the block's
    `view(B, S', 3, H, -1)` is traced with B as a constant."""
    qkv = block.qkv(block.norm1(x)).unflatten(-1, (3, block.heads, -1))  # (B, S', 3, Hh, Dh)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, Hh, S', Dh) each
    q, k = rope(q, pos), rope(k, pos)
    k, v = torch.cat([ck, k], dim=2), torch.cat([cv, v], dim=2)  # (B, Hh, S+S', Dh)
    att = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])  # (B, Hh, S', Dh)
    x = x + block.proj(att.transpose(1, 2).flatten(2))  # (B, S', D)
    return x + block.mlp(block.norm2(x)), k, v


class _OneStepKV(nn.Module):
    """`CausalTransformerCore.step` for export: one step, never a reset inside it (a runtime
    starts an episode by loading the initial state). Same blocks and weights, same result;
    only the attention mask is simpler: the core's general mask (episodes starting inside a
    window) uses `cummax`, which ONNX lacks. For one step without a reset every new token may
    attend to every valid cached token and to all tokens of its own step."""

    def __init__(self, core: CausalTransformerCore):
        super().__init__()
        if core.cfg.window is None:
            raise ExportError(
                "transformer.window=None keeps every past step (a cache that grows without "
                "bound); a controller needs a fixed-size state: train with a window"
            )
        self.core = core
        self.out_tokens = core.out_tokens

    def step(self, tokens: torch.Tensor, state):
        """tokens (B, N, D), state (k, v (B, L, Hh, S, Dh), valid (B, S), pos (B,))."""
        ck, cv, valid, pos = state
        N = tokens.shape[1]
        # Sizes come from the state inputs, never from a Python int B (traced as a constant).
        new = torch.ones_like(pos, dtype=torch.bool)[:, None].expand(-1, N)  # (B, N)
        ok = torch.cat([valid, new], dim=1)  # (B, S+N)
        allowed = ok[:, None, :].expand(-1, N, -1)  # (B, N, S+N)
        x = tokens + self.core.slot  # (B, N, D)
        step_pos = pos[:, None].expand(-1, N)  # (B, N): every token of this step sits at pos
        ks, vs = [], []
        for layer, block in enumerate(self.core.blocks):
            x, k, v = _block(
                block, x, step_pos, ck[:, layer], cv[:, layer], allowed
            )  # k (B, Hh, S+N, Dh)
            ks.append(k)
            vs.append(v)
        # Keep the last S = (window-1)*N tokens: drop the oldest step's N.
        k_new = torch.stack(ks, 1)[:, :, :, N:]  # (B, L, Hh, S, Dh)
        v_new = torch.stack(vs, 1)[:, :, :, N:]
        return self.core.norm(x), (k_new, v_new, ok[:, N:], pos + 1)


class _OneStepLSTM(nn.Module):
    """`LSTMCore.step` for export: the same modules and ops, but the batch stays symbolic (the
    core's `tokens.reshape(B, T, -1)` is traced with B as a constant)."""

    def __init__(self, core: LSTMCore):
        super().__init__()
        self.core = core
        self.out_tokens = core.out_tokens

    def step(self, tokens: torch.Tensor, state):
        """tokens (B, N, D), state (h, c) each (B, L, Hd) -> out (B, 1, D), (h, c)."""
        x = self.core.inp(tokens.flatten(1))[:, None]  # (B, 1, Hd)
        h, c = (s.transpose(0, 1).contiguous() for s in state)  # (L, B, Hd)
        y, (h, c) = self.core.lstm(x, (h, c))  # y (B, 1, Hd)
        return self.core.out(y), (h.transpose(0, 1), c.transpose(0, 1))  # (B, 1, D)


class _PlainAttention(nn.Module):
    """`nn.MultiheadAttention` (batch_first, packed in-projection) in plain ops, same weights.

    Its own forward, traced, bakes the batch size into reshapes (`bsz * num_heads`), so the
    graph would only run at the traced batch; and its inference fast path is one fused op
    with no ONNX form. Here the batch stays symbolic."""

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        if not (mha.batch_first and mha._qkv_same_embed_dim and mha.in_proj_bias is not None):
            raise ExportError(
                "an nn.MultiheadAttention without batch_first / packed in-projection / bias: "
                "the exporter does not handle it"
            )
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ExportError("nn.MultiheadAttention with bias_k / add_zero_attn is not exported")
        self.mha = mha

    def forward(self, query, key, value, need_weights=True, average_attn_weights=True, **_):
        m = self.mha
        H = m.num_heads
        wq, wk, wv = m.in_proj_weight.chunk(3)
        bq, bk, bv = m.in_proj_bias.chunk(3)
        q = F.linear(query, wq, bq).unflatten(-1, (H, -1)).transpose(1, 2)  # (B, H, Lq, Dh)
        k = F.linear(key, wk, bk).unflatten(-1, (H, -1)).transpose(1, 2)  # (B, H, Lk, Dh)
        v = F.linear(value, wv, bv).unflatten(-1, (H, -1)).transpose(1, 2)  # (B, H, Lk, Dh)
        w = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)  # (B, H, Lq, Lk)
        w = w.softmax(-1)
        out = m.out_proj((w @ v).transpose(1, 2).flatten(-2))  # (B, Lq, D)
        if not need_weights:
            return out, None
        return out, w.mean(1) if average_attn_weights else w


def _plain_attention(root: nn.Module) -> None:
    """Replace every nn.MultiheadAttention under `root` by `_PlainAttention` (in place)."""
    for module in list(root.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.MultiheadAttention):
                setattr(module, name, _PlainAttention(child))


class _GMMMode(nn.Module):
    """`GMMHead` whose `predict` (the mean of the most likely component) keeps the batch
    symbolic: the head's `expand(*best.shape, 1, A)` is traced with B as a constant."""

    def __init__(self, head: GMMHead):
        super().__init__()
        self.head = head

    def forward(self, features: torch.Tensor):
        return self.head(features)

    def predict(self, params, sample: bool = False) -> torch.Tensor:
        logits, means, _ = params  # (..., K, Mo), (..., K, Mo, A)
        best = logits.argmax(-1)  # (..., K)
        idx = best[..., None, None].expand(*([-1] * best.ndim), 1, means.shape[-1])
        return means.gather(-2, idx).squeeze(-2)  # (..., K, A)


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
    """The graph: (*observations in `obs_keys` order, *kept state) -> (action_chunk, *new
    kept state). A deep copy of the policy; the caller's policy is not touched."""

    def __init__(self, policy: TTMPolicy):
        super().__init__()
        cfg = policy.cfg
        if cfg.sample_actions:
            raise ExportError(
                "PolicyConfig.sample_actions=True: a sampling head has no deterministic graph; "
                "export with sample_actions=False (the most likely action)"
            )
        self.obs_keys = cfg.obs_keys
        self.policy = copy.deepcopy(policy).eval()
        if isinstance(self.policy.core, CausalTransformerCore):
            self.policy.core = _OneStepKV(self.policy.core)
        elif isinstance(self.policy.core, LSTMCore):
            self.policy.core = _OneStepLSTM(self.policy.core)
        if isinstance(self.policy.head, GMMHead):
            self.policy.head = _GMMMode(self.policy.head)
        _plain_attention(self.policy)
        init = policy.init_state(1)
        self.single = isinstance(init, torch.Tensor)
        init = _as_tuple(init)
        self.state_names = STATE_NAMES[cfg.core]
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
        given = iter(inputs[n:])
        state = [
            _empty(inputs[0], *self.empty[i]) if i in self.empty else next(given)
            for i in range(len(self.state_names))
        ]
        chunk, new = self.policy.step(obs, state[0] if self.single else tuple(state))
        new = _as_tuple(new)
        return (chunk, *(new[i] for i in self.kept))  # (B, K, A), new state


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
            chunk_ref, state_ref = policy.step(dict(zip(policy.cfg.obs_keys, obs)), state_ref)
            chunk, *state = run(obs, state)
            ref = _as_tuple(state_ref)
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


def _onnx_at(step: ControlStep, policy: TTMPolicy, path: Path, opset: int, dynamic: bool):
    import onnx
    import onnxruntime as ort

    names = step.kept_names
    inputs = [*policy.cfg.obs_keys, *names]
    outputs = [ACTION_OUTPUT, *(f"new_{n}" for n in names)]
    # A dynamic batch is traced at 2, so no size-1 dimension is taken for a broadcast one.
    B = 2 if dynamic else 1
    args = (*example_inputs(policy, B), *initial_state(step, policy, B))
    with _Tracing():
        # The TorchScript-based exporter: the dynamo one needs onnxscript, not a dependency.
        torch.onnx.export(
            step,
            args,
            str(path),
            dynamo=False,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={n: {0: "batch"} for n in inputs + outputs} if dynamic else None,
            opset_version=opset,
            do_constant_folding=True,
        )
    onnx.checker.check_model(str(path), full_check=True)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # a failing dynamic-batch check is handled, not logged
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(obs, state):
        feed = {n: x.numpy() for n, x in zip(inputs, [*obs, *state])}
        return [torch.from_numpy(y) for y in session.run(outputs, feed)]

    return _check(policy, step, run, batches=(1, 3) if dynamic else (1,))


def _write_onnx(step: ControlStep, policy: TTMPolicy, path: Path, opset: int) -> dict:
    """A graph with a dynamic batch axis if it checks out at batch 1 and 3; otherwise (an
    ablation module that traces its batch size as a constant, e.g. `expand(x.shape[0], ...)`)
    a batch-1 graph, which is all the runtime needs."""
    try:
        return {**_onnx_at(step, policy, path, opset, dynamic=True), "batch": "dynamic"}
    except Exception as e:  # noqa: BLE001 - any failure of the dynamic graph: try batch 1
        dynamic_error = f"{type(e).__name__}: {str(e)[:300]}"
    try:
        check = _onnx_at(step, policy, path, opset, dynamic=False)
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(
            f"ONNX export of the {policy.cfg.core} policy failed: {type(e).__name__}: "
            f"{str(e)[:500]}"
        ) from e
    return {**check, "batch": 1, "dynamic_batch_error": dynamic_error}


def _torchscript_at(step: ControlStep, policy: TTMPolicy, path: Path, dynamic: bool) -> dict:
    B = 2 if dynamic else 1
    args = (*example_inputs(policy, B), *initial_state(step, policy, B))
    with _Tracing():
        torch.jit.trace(step, args, check_trace=False).save(str(path))
        loaded = torch.jit.load(str(path))  # deprecated upstream in favour of torch.export
    run = lambda obs, state: list(loaded(*obs, *state))  # noqa: E731
    return _check(policy, step, run, batches=(1, 3) if dynamic else (1,))


def _write_torchscript(step: ControlStep, policy: TTMPolicy, path: Path) -> dict:
    """torch.jit.trace of the same step, batch as for ONNX. Note: a TorchScript archive keeps
    its constants in a pickle-format record (read by torch's restricted unpickler); the ONNX
    export has no pickle anywhere."""
    try:
        return {**_torchscript_at(step, policy, path, dynamic=True), "batch": "dynamic"}
    except Exception as e:  # noqa: BLE001 - any failure of the dynamic graph: try batch 1
        dynamic_error = f"{type(e).__name__}: {str(e)[:300]}"
    check = _torchscript_at(step, policy, path, dynamic=False)
    return {**check, "batch": 1, "dynamic_batch_error": dynamic_error}


def _control_hz(checkpoint: Path, override: float | None) -> float:
    if override is not None:
        return float(override)
    doc = json.loads((checkpoint / CONFIG_NAME).read_text())
    return float(doc.get("control_hz", DEFAULT_HZ))


def _env_args(checkpoint: Path) -> dict | None:
    """The training data's env (`env_args.json`, written by ttm-train), so a simulator-backed
    controller can make the same env; None if the checkpoint has none."""
    path = checkpoint / "env_args.json"
    return json.loads(path.read_text()) if path.is_file() else None


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
            "axes": STATE_AXES[name],
            "shape": list(s.shape[1:]),
            "dtype": DTYPES[s.dtype],
        }
        if i in step.kept:
            init_file = f"init_{name}.npy"
            state.append({**entry, "output": f"new_{name}", "init_file": init_file})
            files[init_file] = None
        else:
            omitted.append({**entry, "reason": "zero-sized: carries nothing, rebuilt inside"})
    return {
        "format": SPEC_FORMAT,
        "format_version": SPEC_VERSION,
        "package_version": __version__,
        "temporal_core": cfg.core,
        "batch_axis": "every input and output has a leading batch axis B (dynamic); shapes "
        "below are per sample",
        "observations": observations,
        "action": {
            "name": ACTION_OUTPUT,
            "dim": cfg.action_dim,
            "horizon": cfg.action_horizon,
            "low": [-1.0] * cfg.action_dim,
            "high": [1.0] * cfg.action_dim,
            "units": "robot units (un-normalised), clipped to [low, high]",
            "chunk_execution": cfg.chunk_execution,
            "ensemble_decay": cfg.ensemble_decay,
        },
        "state": state,
        "omitted_state": omitted,
        "policy_config": cfg.to_dict(),
        **extra,
    }


def export(
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    format: Literal["onnx", "torchscript"] = "onnx",
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
    policy = load_pretrained(checkpoint).float().eval()
    step = ControlStep(policy)
    model_name = MODEL_NAMES[format]
    with atomic_directory(out) as tmp:
        if format == "onnx":
            check = _write_onnx(step, policy, tmp / model_name, opset)
        else:
            check = _write_torchscript(step, policy, tmp / model_name)
        files: dict[str, str | None] = {model_name: None}
        spec = _spec(
            policy,
            step,
            files,
            model_format=format,
            model_file=model_name,
            opset=opset if format == "onnx" else None,
            control_hz=_control_hz(checkpoint, control_hz),
            checkpoint={
                "path": str(checkpoint.resolve()),
                "weights_file": WEIGHTS_NAME,
                "weights_sha256": sha256(checkpoint / WEIGHTS_NAME),
            },
            export_check=check,
            env_args=_env_args(checkpoint),
        )
        for entry, s in zip(spec["state"], initial_state(step, policy, 1)):
            np.save(tmp / entry["init_file"], s[0].numpy(), allow_pickle=False)  # one sample
        spec["files_sha256"] = {name: sha256(tmp / name) for name in files}
        (tmp / SPEC_NAME).write_text(json.dumps(spec, indent=2) + "\n")
    return out / model_name


@dataclass
class Args:
    """Export one control step of a checkpoint for a robot controller."""

    checkpoint: Path
    """checkpoint directory (config.json + model.safetensors), e.g. runs/x/checkpoints/1000"""
    out: Path
    """output directory (created, or replaced if it holds an earlier export)"""
    format: Literal["onnx", "torchscript"] = "onnx"
    """onnx: for `ttm_policy.runtime` (numpy + onnxruntime); torchscript: torch.jit.load"""
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
