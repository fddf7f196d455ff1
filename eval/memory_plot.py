"""Memory introspection for a TTM policy over one episode: what is read and written when.

Records, at every control step, the read weights (R read tokens over [memory ‖ inputs]),
the write weights (M new slots over [memory ‖ outputs ‖ inputs]) and the memory tokens'
norms, then draws them as heatmaps against time, with each cued item's steps shaded. On a
cue task one sees when the cue's image tokens are written into memory and when memory is
read. On a task that cues several items in order (SequenceCue, TouchSequenceCued) a second
figure per episode maps items to memory slots: which slots are written while item i is shown,
and which are read while the policy heads for item i.

    python -m eval.memory_plot --checkpoint runs/pointcue/checkpoints/last --out runs/introspect

The env is the checkpoint's (its env_args.json, as `ttm-eval` builds it) unless --task names
one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import tyro

from ttm_policy import TTMPolicy
from ttm_policy.ttm import TokenTuringMachine


def _task_attr(env: gym.Env, name: str) -> Any:
    """An attribute of the task: on the gymnasium env, else on the robosuite suite it wraps."""
    u = env.unwrapped
    for obj in (u, getattr(u, "suite", None)):
        if obj is not None and hasattr(obj, name):
            return getattr(obj, name)
    return None


def cue_windows(env: gym.Env) -> list[tuple[int, int, str]]:
    """After a reset: [(first step, end step, label)] of each cued item, the steps whose
    observation shows it. Tasks that cue items in order (`item_steps`, `sequence`) give one
    window per item, the other cue tasks one window (`cue_steps`), the rest none."""
    item_steps, seq = _task_attr(env, "item_steps"), _task_attr(env, "sequence")
    if item_steps and seq is not None:
        return [
            (i * item_steps, (i + 1) * item_steps, f"item {i} = {k}") for i, k in enumerate(seq)
        ]
    cue_steps = _task_attr(env, "cue_steps")
    return [(0, int(cue_steps), "cue")] if cue_steps else []


def trace_episode(
    policy: TTMPolicy,
    env: gym.Env,
    seed: int,
    options: dict | None = None,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Run one episode with `policy.select_action`, recording the TTM's weights each step.

    Returns read (T, R, M+N), write (T, M, M+R+N), memory_norm (T, M), keep (T, M) (the
    write gate's share of the old memory per slot, mean over channels; zeros without a gate),
    success (bool), token labels, the cue windows (`cue_windows`), the step from which actions move the robot
    (`moving_from`: after the cue and the delay; 0 for a task without them) and `progress`
    (T,): the env's `info["progress"]` after each step (items done in order), -1 where the
    env reports none. The policy's core must be a TTM with memory and a weighted-sum
    summariser.
    """
    core = policy.core
    if not isinstance(core, TokenTuringMachine) or core.cfg.memoryless:
        raise ValueError(
            f"memory introspection needs a TTM core with memory, got core={policy.cfg.core!r}"
        )
    records: list[dict] = []

    def recording_step(tokens, memory):  # select_action's core.step, with the weights kept
        out, new_memory, w = core.step_with_weights(tokens, memory)
        if w["read"] is None or w["write"] is None:
            raise ValueError(
                f"summariser {core.cfg.summariser!r} has no read/write weights to draw"
            )
        records.append(
            {
                "read": w["read"][0].float().cpu().numpy(),
                "write": w["write"][0].float().cpu().numpy(),
                "memory_norm": new_memory[0].norm(dim=-1).float().cpu().numpy(),
                # the write gate's share of the old memory per slot (0: no gate, all rewritten)
                "keep": (
                    w["keep"][0].mean(-1).float().cpu().numpy()
                    if w.get("keep") is not None
                    else np.zeros(new_memory.shape[1], np.float32)
                ),
            }
        )
        return out, new_memory

    core.step = recording_step  # instance attribute shadows the method for this episode only
    progress: list[int] = []
    try:
        obs, info = env.reset(seed=seed, options=options)
        policy.reset()
        windows = cue_windows(env)
        success, steps = False, 0
        while True:
            obs, _, terminated, truncated, info = env.step(policy.select_action(obs))
            steps += 1
            progress.append(int(info.get("progress", -1)))
            success = success or bool(info.get("success", False))
            if terminated or truncated or (max_steps and steps >= max_steps):
                break
    finally:
        del core.step
    cfg = policy.cfg
    inputs = [
        f"{k.removesuffix('_image')}[{i}]"
        for k in cfg.camera_keys
        for i in range(cfg.tokens_per_camera)
    ]
    inputs += [f"lowdim[{i}]" for i in range(cfg.num_lowdim_tokens)]
    M, R = core.cfg.memory_tokens, core.cfg.read_tokens
    held = (_task_attr(env, "cue_steps") or 0) + (_task_attr(env, "delay_steps") or 0)
    return {
        "read": np.stack([r["read"] for r in records]),  # (T, R, M+N)
        "write": np.stack([r["write"] for r in records]),  # (T, M, M+R+N)
        "memory_norm": np.stack([r["memory_norm"] for r in records]),  # (T, M)
        "keep": np.stack([r["keep"] for r in records]),  # (T, M)
        "success": success,
        "segments": {"memory": M, "outputs": R, "inputs": len(inputs)},
        "input_labels": inputs,
        "cue_windows": windows,
        "moving_from": int(held),
        "progress": np.asarray(progress),
    }


def item_memory_map(trace: dict) -> dict[str, np.ndarray]:
    """Where each cued item goes in memory: `written` and `read`, (items, M) each.

    written[i, j]: over the steps showing item i, the mean share of memory slot j that is new
    (taken from that step's read outputs and input tokens, not copied from the old memory; with
    the write gate, the part the gate lets through, averaged over channels).
    read[i, j]: over the steps after the hold in which the policy heads for item i (i items
    done so far; every moving step for a task that reports no progress), the mean read weight
    on slot j, summed over the R reads. A row with no such step is NaN.
    """
    M = trace["segments"]["memory"]
    write, read = trace["write"], trace["read"]
    T = len(read)
    new_share = 1.0 - write[:, :, :M].sum(-1)  # (T, M)
    if "keep" in trace:  # a gated write keeps `keep` of the old memory before it mixes
        new_share = new_share * (1.0 - trace["keep"])
    on_memory = read[:, :, :M].sum(1)  # (T, M)
    progress = np.where(trace["progress"] < 0, 0, trace["progress"])
    # the policy heads for item k at step t when k items were done before it
    done_before = np.concatenate([[0], progress[:-1]])[:T]
    windows = trace["cue_windows"]
    written = np.full((len(windows), M), np.nan)
    read_map = np.full((len(windows), M), np.nan)
    moving = np.arange(T) >= trace["moving_from"]
    for i, (t0, t1, _) in enumerate(windows):
        if t0 < T:
            written[i] = new_share[t0 : min(t1, T)].mean(0)
        heading = moving & (done_before == i)
        if heading.any():
            read_map[i] = on_memory[heading].mean(0)
    return {"written": written, "read": read_map}


def plot_trace(
    trace: dict,
    path: Path,
    shade: tuple[int, int] | list[tuple[int, int, str]] | None = None,
    title: str = "",
) -> Path:
    """Three heatmaps against time: read share per token, write share per token, memory norms.
    `shade`: (start, end) of the cue, or the trace's `cue_windows`, each shaded and labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if shade is None:
        spans = []
    elif isinstance(shade, tuple):
        spans = [(shade[0], shade[1], "")]
    else:
        spans = list(shade)
    M, R, N = (trace["segments"][k] for k in ("memory", "outputs", "inputs"))
    read = trace["read"].sum(1).T  # (M+N, T): how much of each token the R reads took
    write = trace["write"].mean(1).T  # (M+R+N, T): each token's share of the new memory
    fig, axes = plt.subplots(3, 1, figsize=(10, 11), sharex=True)
    panels = [
        (read, "read: weight on each token (summed over R reads)", [(M, "memory | inputs")]),
        (
            write,
            "write: share of new memory from each token",
            [(M, "memory | outputs"), (M + R, "outputs | inputs")],
        ),
        (trace["memory_norm"].T, "memory token norms", []),
    ]
    for ax, (img, name, bounds) in zip(axes, panels):
        im = ax.imshow(img, aspect="auto", interpolation="nearest", cmap="viridis")
        fig.colorbar(im, ax=ax, fraction=0.025)
        for y, label in bounds:
            ax.axhline(y - 0.5, color="white", lw=1)
            ax.text(-0.5, y - 0.5, label, color="white", fontsize=7, va="bottom")
        for k, (t0, t1, label) in enumerate(spans):
            ax.axvspan(t0 - 0.5, t1 - 0.5, color="red", alpha=0.1 + 0.1 * (k % 2), lw=0)
            if label and ax is axes[0]:
                ax.text(t0 - 0.4, -0.4, label, color="red", fontsize=7, va="top", rotation=90)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("token")
    axes[-1].set_xlabel("control step")
    fig.suptitle(title or f"TTM memory over one episode (success={trace['success']})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_items(trace: dict, path: Path, title: str = "") -> Path:
    """`item_memory_map` as two heatmaps, items x memory slots: written, then read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = item_memory_map(trace)
    labels = [w[2] for w in trace["cue_windows"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 1.6 + 0.45 * len(labels)))
    for ax, key, name in (
        (axes[0], "written", "written while item i is shown\n(share of each slot that is new)"),
        (axes[1], "read", "read while heading for item i\n(read weight on each slot)"),
    ):
        im = ax.imshow(maps[key], aspect="auto", interpolation="nearest", cmap="viridis")
        fig.colorbar(im, ax=ax, fraction=0.04)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel("memory slot")
        ax.set_title(name, fontsize=9)
    fig.suptitle(title or "TTM memory slots by cued item", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@dataclass
class Args:
    checkpoint: Path
    """A TTM policy checkpoint directory (config.json + model.safetensors [+ env_args.json])."""
    out: Path = Path("runs/introspect")
    """Where memory_cue<c>.png, memory_items_cue<c>.png and memory_trace.json go."""
    task: str | None = None
    """Task to run (`envs.TASKS`) with its defaults; default: the checkpoint's env_args.json,
    the env it was trained on, as `ttm-eval` builds it."""
    seed: int = 0
    """Scene seed; every cue is run on the same scene (and the policy's draws seeded by it)."""
    cues: tuple[int, ...] | None = None
    """Cue indices to run; default: every cue of a task with at most 4, else the first and
    the last. A task without cues runs one episode."""
    max_steps: int | None = None
    """Stop each episode after this many steps; default: when the env ends it."""


def write_summary(trace: dict) -> dict[str, list[float]]:
    """Per memory slot, averaged over the episode's steps: `self_copy`, the write's weight on
    the slot's own old content (1 holds it; the official write starts near 1/(M+R+N)), and
    `old_memory`, its weight on all old slots together (the rest comes from this step's
    outputs and inputs); with the gated write, counting what the gate keeps (channel mean).
    A write whose `self_copy` is near 1/M while `old_memory` is high averages the slots into
    one: the memory then keeps one blurred summary, not M items."""
    M = trace["segments"]["memory"]
    w = trace["write"]  # (T, M, M+R+N)
    own = np.arange(M)
    keep = trace.get("keep", np.zeros(w.shape[:2], np.float32))  # (T, M); 0 without a gate
    # With the gated write a slot keeps `keep` of itself directly and the summary's share of
    # the rest: memory' = keep * memory + (1 - keep) * summary (per channel; mean here).
    self_copy = keep + (1 - keep) * w[:, own, own]
    old = keep + (1 - keep) * w[:, :, :M].sum(-1)
    return {
        "self_copy": [round(float(x), 4) for x in self_copy.mean(0)],
        "old_memory": [round(float(x), 4) for x in old.mean(0)],
    }


def _json_matrix(a: np.ndarray) -> list[list[float | None]]:
    """Rows of floats to 4 places, NaN as null (JSON has no NaN)."""
    return [[None if np.isnan(x) else round(float(x), 4) for x in row] for row in a]


def make_env(args: Args) -> gym.Env:
    """--task's env, else the checkpoint's (env_args.json)."""
    from envs.rollout import make_env as make

    if args.task is not None:
        return make(args.task)
    path = args.checkpoint / "env_args.json"
    if not path.is_file():
        raise SystemExit(f"{path}: missing; pass --task to say which environment to run")
    return make(json.loads(path.read_text()))


def main() -> None:
    args = tyro.cli(Args)
    policy = TTMPolicy.from_pretrained(args.checkpoint)
    torch.set_num_threads(1)
    env = make_env(args)
    n_cues = _task_attr(env, "cues")
    if n_cues is None:  # no cue to choose: one episode, no reset options
        cues: tuple[int | None, ...] = (None,)
    elif args.cues is not None:
        cues = args.cues
    else:
        cues = tuple(range(n_cues)) if n_cues <= 4 else (0, n_cues - 1)
    name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    summary = {}
    for cue in cues:
        torch.manual_seed(args.seed)
        options = None if cue is None else {"cue": cue}
        tr = trace_episode(policy, env, args.seed, options=options, max_steps=args.max_steps)
        key = "episode" if cue is None else f"cue{cue}"
        p = plot_trace(
            tr,
            args.out / ("memory.png" if cue is None else f"memory_cue{cue}.png"),
            tr["cue_windows"] or None,
            title=f"{name}{'' if cue is None else f', cue {cue} (shaded: cue shown)'}, "
            f"success={tr['success']}",
        )
        entry = {"plot": str(p), "steps": len(tr["read"]), "success": tr["success"]}
        entry["cue_windows"] = tr["cue_windows"]
        entry["write"] = write_summary(tr)
        if len(tr["cue_windows"]) > 1:
            maps = item_memory_map(tr)
            entry["items_plot"] = str(
                plot_items(tr, args.out / f"memory_items_cue{cue}.png", f"{name}, cue {cue}")
            )
            entry["progress"] = int(tr["progress"].max(initial=0))
            entry |= {k: _json_matrix(v) for k, v in maps.items()}
        summary[key] = entry
        ws = entry["write"]
        print(
            f"{key}: {len(tr['read'])} steps, success={tr['success']}, plot {p}; the write "
            f"keeps {np.mean(ws['self_copy']):.2f} of each slot per step (1/M = "
            f"{1 / len(ws['self_copy']):.2f}), {np.mean(ws['old_memory']):.2f} from old memory"
        )
    env.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory_trace.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
