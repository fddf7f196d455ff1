"""Memory introspection for a TTM policy over one episode: what is read and written when.

Records, at every control step, the read weights (R read tokens over [memory ‖ inputs]),
the write weights (M new slots over [memory ‖ outputs ‖ inputs]) and the memory tokens'
norms, then draws them as heatmaps against time, with the cue and delay shaded. On a cue
task one sees when the cue's image tokens are written into memory and when memory is read.

    python -m eval.memory_plot --checkpoint runs/pointcue/checkpoints/last --out runs/introspect
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import tyro

from ttm_policy import TTMPolicy
from ttm_policy.ttm import TokenTuringMachine


def trace_episode(
    policy: TTMPolicy,
    env: gym.Env,
    seed: int,
    options: dict | None = None,
    max_steps: int | None = None,
) -> dict[str, np.ndarray]:
    """Run one episode with `policy.select_action`, recording the TTM's weights each step.

    Returns read (T, R, M+N), write (T, M, M+R+N), memory_norm (T, M), success (bool), and
    token labels. The policy's core must be a TTM with memory and a weighted-sum summariser.
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
            }
        )
        return out, new_memory

    core.step = recording_step  # instance attribute shadows the method for this episode only
    try:
        obs, info = env.reset(seed=seed, options=options)
        policy.reset()
        success, steps = False, 0
        while True:
            obs, _, terminated, truncated, info = env.step(policy.select_action(obs))
            steps += 1
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
    return {
        "read": np.stack([r["read"] for r in records]),  # (T, R, M+N)
        "write": np.stack([r["write"] for r in records]),  # (T, M, M+R+N)
        "memory_norm": np.stack([r["memory_norm"] for r in records]),  # (T, M)
        "success": success,
        "segments": {"memory": M, "outputs": R, "inputs": len(inputs)},
        "input_labels": inputs,
    }


def plot_trace(
    trace: dict, path: Path, shade: tuple[int, int] | None = None, title: str = ""
) -> Path:
    """Three heatmaps against time: read share per token, write share per token, memory norms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        if shade:
            ax.axvspan(shade[0] - 0.5, shade[1] - 0.5, color="red", alpha=0.15, lw=0)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("token")
    axes[-1].set_xlabel("control step")
    fig.suptitle(title or f"TTM memory over one episode (success={trace['success']})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@dataclass
class Args:
    checkpoint: Path
    """A TTM policy checkpoint directory (config.json + model.safetensors)."""
    out: Path = Path("runs/introspect")
    """Where memory_cue<i>.png and memory_trace.json go."""
    task: str = "PointCue"
    """Task to run (`envs.TASKS`)."""
    seed: int = 0
    """Scene seed; both cues are run on the same scene."""


def main() -> None:
    import envs

    args = tyro.cli(Args)
    policy = TTMPolicy.from_pretrained(args.checkpoint)
    torch.set_num_threads(1)
    env = gym.make(envs.task_id(args.task))
    u = env.unwrapped
    cue_end = getattr(u, "cue_steps", 0)
    shade = (0, cue_end) if cue_end else None
    summary = {}
    for cue in (0, 1):
        tr = trace_episode(policy, env, args.seed, options={"cue": cue})
        p = plot_trace(
            tr,
            args.out / f"memory_cue{cue}.png",
            shade,
            title=f"{args.task}, cue {cue} (shaded: cue shown), success={tr['success']}",
        )
        summary[f"cue{cue}"] = {"plot": str(p), "steps": len(tr["read"]), "success": tr["success"]}
        print(f"cue {cue}: {len(tr['read'])} steps, success={tr['success']}, plot {p}")
    (args.out / "memory_trace.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
