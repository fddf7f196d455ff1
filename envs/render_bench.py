"""Rendering cost of the robosuite tasks: ms per frame and per env step, robosuite's render
settings vs ours.

    python -m envs.render_bench [--task Lift] [--image-size 84] [--frames 40] [--steps 30] [--json out.json]

Rows:
  robosuite default   4096 shadow map, 4x multisampled offscreen buffer, planar reflections
  - multisampling     offsamples 0
  - shadows           shadowsize 0 (no shadow map pass)
  - reflections       mjRND_REFLECTION off (reflective table/floor re-render the scene)
  ours ("fast")       all three off: what `render_quality="fast"` (the default) does
Per frame: median over `frames` renders of each default camera (agentview, eye-in-hand).
Per step: median env.step with both cameras rendered, and with images off (physics +
controller only). Timings on a shared machine vary; medians over the same run compare fairly.
"""

from __future__ import annotations

import argparse
import json
import time

from envs import gl

gl.setup()  # before mujoco is imported: it picks its GL backend then

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

import envs  # noqa: E402
from envs.robosuite_tasks import DEFAULT_CAMERAS, RenderContext, RobosuiteTask  # noqa: E402

CONFIGS = {  # name: (shadowsize, offsamples, reflections)
    "robosuite default": (4096, 4, True),
    "- multisampling": (4096, 0, True),
    "- shadows": (0, 4, True),
    "- reflections": (4096, 4, False),
    'ours ("fast")': (0, 0, False),
}


def _apply(task: RobosuiteTask, shadowsize: int, offsamples: int, reflections: bool) -> None:
    """Set render quality on the live sim and recreate its render context."""
    sim = task.suite.sim
    sim.model._model.vis.quality.shadowsize = shadowsize
    sim.model._model.vis.quality.offsamples = offsamples
    old, sim._render_context_offscreen = sim._render_context_offscreen, None
    if old is not None:
        old.free()  # in its own GL context
    ctx = RenderContext(sim, device_id=-1)
    ctx.vopt.geomgroup[0], ctx.vopt.geomgroup[1] = 0, 1  # visual meshes only, as robosuite
    ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = int(reflections)


def _median_ms(fn, n: int) -> float:
    fn()  # warm-up (shader compilation, caches)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def bench(
    task: str = "Lift", image_size: int = 84, frames: int = 40, steps: int = 30
) -> list[dict]:
    """One dict per configuration: ms_per_frame, ms_per_step (both cameras rendered)."""
    import gymnasium as gym

    env = gym.make(envs.task_id(task), image_size=image_size, render_quality="robosuite")
    t = env.unwrapped
    env.reset(seed=0)
    zero = np.zeros(7)
    rows = []
    for name, (shadow, samples, refl) in CONFIGS.items():
        _apply(t, shadow, samples, refl)
        per_cam = [
            _median_ms(
                lambda c=cam: t.suite.sim.render(
                    camera_name=c, width=image_size, height=image_size
                ),
                frames,
            )
            for cam in DEFAULT_CAMERAS
        ]
        rows.append(
            {
                "config": name,
                "shadowsize": shadow,
                "offsamples": samples,
                "reflections": refl,
                "ms_per_frame": float(np.mean(per_cam)),
                "ms_per_frame_by_camera": dict(zip(DEFAULT_CAMERAS, per_cam)),
                "ms_per_step_images": _median_ms(lambda: env.step(zero), steps),
            }
        )
    env.close()
    env = gym.make(envs.task_id(task), cameras=())
    env.reset(seed=0)
    no_img = _median_ms(lambda: env.step(zero), steps)
    env.close()
    for r in rows:
        r["ms_per_step_no_images"] = no_img
        r["task"], r["image_size"] = task, image_size
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--task", default="Lift")
    p.add_argument("--image-size", type=int, default=84)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    a = p.parse_args()
    rows = bench(a.task, a.image_size, a.frames, a.steps)
    base = rows[0]["ms_per_frame"]
    print(
        f"{a.task}, {a.image_size}x{a.image_size}, cameras {', '.join(DEFAULT_CAMERAS)} (medians)"
    )
    print(f"{'config':<20} {'ms/frame':>9} {'speed-up':>9} {'ms/step (2 cams)':>17} {'steps/s':>8}")
    for r in rows:
        print(
            f"{r['config']:<20} {r['ms_per_frame']:>9.1f} {base / r['ms_per_frame']:>8.1f}x "
            f"{r['ms_per_step_images']:>17.1f} {1000 / r['ms_per_step_images']:>8.1f}"
        )
    no_img = rows[0]["ms_per_step_no_images"]
    print(f"{'images off':<20} {'-':>9} {'':>9} {no_img:>17.1f} {1000 / no_img:>8.1f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
