"""The main job, end to end: collect demonstrations -> train a TTM policy -> evaluate it in
simulation -> export it -> write `runs/quickstart/report.md`.

    bash scripts/quickstart.sh                 # = python -m eval.quickstart
    python -m eval.quickstart --force          # redo every stage

The default task is `PointCue` (cue 5 steps, delay 10): a memory task that trains and
evaluates within minutes on 2 CPU cores. `--task LiftCued` (or PlaceCued) runs the same job on
a robosuite memory task (cue 10 steps, delay 10, the agentview and wrist cameras at 64 px and
the robot's proprioception, no object state: the task's recipe in `envs/registry.py`), which
takes longer on CPU. Training is `ttm-train`'s default recipe (preset `cpu`, train/presets.py). Each stage
is skipped when its output is already there (demonstrations, a finished training run,
eval.json, the export), so a re-run only redoes what is missing; an interrupted training run resumes from its last checkpoint.
With a CUDA GPU the training and evaluation use it.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import tyro


@dataclass
class QuickstartConfig:
    out: Path = Path("runs/quickstart")
    """Everything goes here: demos.hdf5, train/, eval/, export/, introspect/, report.md."""
    task: str = "PointCue"
    """Task (envs.TASKS); PointCue is the CPU-friendly memory task."""
    episodes: int | None = None
    """Expert demonstrations to collect; default: the task's recipe (PointCue 200, robosuite 100)."""
    image_size: int | None = None
    """Camera side for collection, training and evaluation; default: the task's recipe (32 / 64)."""
    delay_steps: int | None = None
    """Memory tasks: steps between the cue and the decision; default: the task's recipe (10)."""
    steps: int | None = None
    """Training steps; default: ttm-train's (the recipe of docs/results.md)."""
    eval_episodes: int = 50
    """Evaluation episodes."""
    eval_envs: int = 2
    """Parallel evaluation envs."""
    seed: int = 0
    """Seeds collection, training and evaluation."""
    force: bool = False
    """Redo every stage even when its output exists."""
    stages: tuple[str, ...] = field(
        default=("collect", "train", "eval", "export", "introspect", "report")
    )
    """Stages to run (in this order)."""


def _stage(name: str) -> None:
    print(f"\n=== {name} " + "=" * (60 - len(name)), flush=True)


def train_config(cfg: QuickstartConfig, dataset: Path):
    """`ttm-train --dataset <demos> --out <out>/train --seed <seed>` (with `--steps` when given):
    the default recipe, preset `cpu` (train/presets.py)."""
    from train.presets import preset

    fields_ = {"steps": cfg.steps} if cfg.steps else {}
    return preset(
        "cpu", dataset=dataset, out=cfg.out / "train", seed=cfg.seed, save_every=100, **fields_
    )


def plot_curve(metrics: Path, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from train.train import read_metrics

    rows = [r for r in read_metrics(metrics) if r.get("losses/total") is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows], [r["losses/total"] for r in rows])
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("L1 loss (normalised actions)")
    ax.set_title("Training curve")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def runtime_latency(export_dir: Path, env_args: dict, steps: int = 300) -> dict:
    """p50/p99 of the exported policy in the torch-free runtime, on real observations."""
    from envs.env_args import make_from_env_args
    from ttm_policy.runtime import OnnxPolicy

    policy = OnnxPolicy(export_dir)
    env = make_from_env_args(env_args)
    obs, _ = env.reset(seed=0)
    policy.reset()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        action = policy(obs)
        times.append(time.perf_counter() - t0)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
            policy.reset()
    env.close()
    ms = np.array(times) * 1e3
    return {
        "steps": steps,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "faults": policy.fault_count,
    }


def _default_steps() -> int:
    from train.presets import preset

    return preset("cpu").steps


def resolved(cfg: QuickstartConfig) -> QuickstartConfig:
    """`cfg` with the task's recipe (`envs/registry.py`) filled in where it left a value to the
    recipe. Raises ValueError naming the known tasks for an unknown one."""
    from envs import task_spec

    r = task_spec(cfg.task).recipe
    return replace(
        cfg,
        episodes=cfg.episodes or r.episodes,
        image_size=cfg.image_size or r.image_size,
        steps=cfg.steps or _default_steps(),
        delay_steps=cfg.delay_steps if cfg.delay_steps is not None else r.delay_steps,
    )


def eval_current(eval_json: Path, checkpoint: Path) -> bool:
    """Whether `eval_json` exists and was written after `checkpoint`'s weights."""
    weights = checkpoint / "model.safetensors"
    return eval_json.exists() and eval_json.stat().st_mtime > weights.stat().st_mtime


def reproduce_command(cfg: QuickstartConfig) -> str:
    """The command that redoes this run: the options that differ from the task's defaults."""
    base = resolved(QuickstartConfig(task=cfg.task))
    flags = [] if cfg.task == QuickstartConfig.task else [f"--task {cfg.task}"]
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name not in ("task", "force") and value != getattr(base, f.name):
            shown = " ".join(value) if isinstance(value, tuple) else value
            flags.append(f"--{f.name.replace('_', '-')} {shown}")
    return " ".join(["bash scripts/quickstart.sh", *flags, "--force"])


def run(cfg: QuickstartConfig) -> dict:
    from envs import task_spec
    from envs.collect import Args, collect

    cfg, r = resolved(cfg), task_spec(cfg.task).recipe
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    data, train_dir, eval_dir = out / "demos.hdf5", out / "train", out / "eval"
    export_dir, intro_dir = out / "export", out / "introspect"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    files: dict[str, str] = {}

    if "collect" in cfg.stages:
        _stage(f"1/5 collect {cfg.episodes} {cfg.task} demonstrations")
        t0 = time.perf_counter()
        if data.exists() and not cfg.force:
            print(f"reusing {data}")
        else:
            collect(
                Args(
                    task=cfg.task,
                    out=data,
                    episodes=cfg.episodes,
                    workers=2,
                    cameras=r.cameras,
                    image_size=cfg.image_size,
                    seed=cfg.seed,
                    delay_steps=cfg.delay_steps,
                    overwrite=True,
                )
            )
        timings["collect_s"] = time.perf_counter() - t0
        files["demonstrations"] = str(data)

    last = train_dir / "checkpoints" / "last"
    if "train" in cfg.stages:
        from train.resume import checkpoint_steps
        from train.train import train

        _stage(f"2/5 train a TTM policy for {cfg.steps} steps on {device}")
        t0 = time.perf_counter()
        tcfg = train_config(cfg, data)
        done = checkpoint_steps(train_dir)
        if cfg.force and train_dir.exists():
            import shutil

            shutil.rmtree(train_dir)
            done = []
        if done and done[-1] >= cfg.steps:
            print(f"reusing the finished run in {train_dir}")
        else:
            train(replace(tcfg, resume=bool(done)))
        timings["train_s"] = time.perf_counter() - t0
        files["checkpoint"] = str(last)
        files["training_curve"] = str(
            plot_curve(train_dir / "metrics.jsonl", out / "training_curve.png")
        )

    if "eval" in cfg.stages:
        from eval.evaluate import EvalConfig, evaluate

        _stage(f"3/5 evaluate over {cfg.eval_episodes} episodes in {cfg.eval_envs} envs")
        t0 = time.perf_counter()
        if eval_current(eval_dir / "eval.json", last) and not cfg.force:
            print(f"reusing {eval_dir / 'eval.json'}")
        else:
            evaluate(
                EvalConfig(
                    checkpoint=last,
                    episodes=cfg.eval_episodes,
                    envs=cfg.eval_envs,
                    video=1,
                    seed=cfg.seed,
                    out=eval_dir,
                    device=device,
                )
            )
        timings["eval_s"] = time.perf_counter() - t0
        files["eval"] = str(eval_dir / "eval.json")
        files["video"] = str(eval_dir / "video_0.mp4")

    if "export" in cfg.stages:
        from ttm_policy.export import export

        _stage("4/5 export to ONNX and time the torch-free runtime")
        t0 = time.perf_counter()
        if (export_dir / "policy_spec.json").exists() and not cfg.force:
            print(f"reusing {export_dir}")
        else:
            export(last, export_dir)
        env_args = json.loads((last / "env_args.json").read_text())
        latency = runtime_latency(export_dir, env_args)
        (out / "runtime_latency.json").write_text(json.dumps(latency, indent=2))
        print(
            f"runtime: p50 {latency['p50_ms']:.2f} ms, p99 {latency['p99_ms']:.2f} ms over {latency['steps']} steps"
        )
        timings["export_s"] = time.perf_counter() - t0
        files["export"] = str(export_dir)

    if "introspect" in cfg.stages:
        from envs.env_args import make_from_env_args
        from eval.memory_plot import plot_trace, trace_episode
        from ttm_policy import TTMPolicy

        _stage("5/5 memory introspection and report")
        policy = TTMPolicy.from_pretrained(last)
        env = make_from_env_args(json.loads((last / "env_args.json").read_text()))
        for cue in (0, 1):
            tr = trace_episode(policy, env, seed=cfg.seed, options={"cue": cue})
            files[f"memory_plot_cue{cue}"] = str(
                plot_trace(
                    tr,
                    intro_dir / f"memory_cue{cue}.png",
                    tr["cue_windows"] or None,
                    title=f"{cfg.task}, cue {cue} (shaded: cue visible), success={tr['success']}",
                )
            )
        env.close()

    if "report" in cfg.stages:
        report = write_report(cfg, files, timings)
        files["report"] = str(report)
    total = time.perf_counter() - t_start
    print(f"\nquickstart done in {total / 60:.1f} min. Files:")
    for k, v in files.items():
        print(f"  {k:<20} {v}")
    return {"files": files, "timings": timings, "total_s": total}


def write_report(cfg: QuickstartConfig, files: dict, timings: dict) -> Path:
    out = cfg.out
    ev = json.loads((out / "eval" / "eval.json").read_text())
    lat = (
        json.loads((out / "runtime_latency.json").read_text())
        if (out / "runtime_latency.json").exists()
        else None
    )
    summary = json.loads((out / "train" / "summary.json").read_text())
    lo, hi = ev["ci95_wilson"]
    rel = lambda p: str(Path(p).resolve().relative_to(out.resolve()))  # noqa: E731
    lines = [
        f"# Quickstart report: TTM policy on {cfg.task}",
        "",
        f"- **Success: {ev['successes']}/{ev['episodes_run']} = {ev['success_rate']:.0%}** "
        f"(95% Wilson interval {lo:.0%}-{hi:.0%}), mean episode length {ev['mean_length']:.1f} steps, "
        f"seed {ev['seed']}.",
        f"- Training: {summary['steps']} steps, {summary['parameters']:,} parameters, final L1 loss "
        f"{summary['final_loss']:.4f}; {cfg.episodes} expert demonstrations at {cfg.image_size}x{cfg.image_size} px.",
    ]
    if lat:
        lines.append(
            f"- Exported ONNX policy in the torch-free runtime: p50 {lat['p50_ms']:.2f} ms, "
            f"p99 {lat['p99_ms']:.2f} ms per control step ({lat['steps']} steps, {lat['faults']} faults)."
        )
    lines.append(
        "- Wall time per stage: "
        + ", ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in timings.items())
        + "."
    )
    lines += ["", "## Training curve", "", f"![training curve]({rel(files['training_curve'])})", ""]
    if "memory_plot_cue0" in files:
        lines += [
            "## Memory introspection",
            "",
            "Read weights (which memory and input tokens the R read tokens took), write weights (where "
            "the new memory came from) and memory-token norms at every control step; the cue is "
            "visible in the shaded steps.",
            "",
        ]
        lines += [f"![memory, cue {c}]({rel(files[f'memory_plot_cue{c}'])})" for c in (0, 1)] + [""]
    if Path(files.get("video", "")).exists():
        lines += ["## Video", "", f"[first evaluation episode]({rel(files['video'])})", ""]
    lines += ["## Files", ""] + [f"- {k}: `{v}`" for k, v in files.items()] + [""]
    lines += [f"Reproduce: `{reproduce_command(cfg)}`.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> None:
    from envs import gl

    gl.setup()  # headless rendering (MUJOCO_GL=egl) unless chosen, before any env is made
    cfg = tyro.cli(QuickstartConfig, args=argv)
    try:
        run(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"quickstart: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
