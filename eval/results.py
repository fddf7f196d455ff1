"""The results table: every temporal core on the same demonstrations with the same budget.

    ttm-bench results --task PointCue --delays 10 30 --out runs/results
    ttm-bench results --task LiftCued --delays 10 30 --out runs/results
    ttm-bench results --task Lift --delays --out runs/results
    ttm-bench results --task LiftCued --cores --out runs/results   # only rewrite the tables

For each delay (or once, for a task without a cue): collect expert demonstrations once, train
each core with the same recipe (`ttm-train --dataset <demos> --policy <core>`: the default
preset `cpu`, train/presets.py, the same steps and batch for every core), evaluate each over the same seeded episodes, then write
`out/table_<task>/compare.md` / `compare.png` (success with 95% Wilson intervals) and
`out/results_<task>.json` (budgets, wall times, hardware), and rewrite `out/results.md`
(every task's rows on disk, how unsuccessful episodes ended, wall times). Finished demos, training runs and
evaluations are reused, so an interrupted table resumes where it stopped, and several
processes may each run some of the cores (`--cores`); the table lists every core whose
evaluation exists. A row's demonstrations are reused only at the count they were collected
with: another `--episodes` needs another `--out`.

Demonstrations and cameras follow the task's recipe in `envs/registry.py` (each overridable):
PointCue 200 demonstrations at 32 px; robosuite tasks 100 demonstrations from the `agentview`
and wrist cameras at 64 px. The policies see the cameras and the robot's proprioception only;
`--object-state` adds the simulator's object poses (an ablation, labelled in the table). `--paired-cues`
records each scene once per cue instead (`ttm-collect --paired-cues`; docs/results.md
measures it).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from eval.compare import CORE_ORDER as CORES


def cell_dir(out: Path, task: str, delay: int | None) -> Path:
    return out / (task if delay is None else f"{task}_delay{delay}")


def cells_on_disk(out: Path, task: str) -> list[tuple[int | None, Path]]:
    """(delay, directory) of every row of `task` under `out` (delay None: no cue), by delay."""
    found = [(None, out / task)] if (out / task / "demos.hdf5").exists() else []
    for d in out.glob(f"{task}_delay*"):
        if d.name.removeprefix(f"{task}_delay").isdigit() and (d / "demos.hdf5").exists():
            found.append((int(d.name.removeprefix(f"{task}_delay")), d))
    return sorted(found, key=lambda c: -1 if c[0] is None else c[0])


def outcome_counts(ev: dict) -> tuple[int, int] | tuple[None, None]:
    """(failures, timeouts) of an eval.json. Evaluations from before outcomes were recorded
    count an unsuccessful episode that ended before the env's horizon as a failure."""
    eps = ev["per_episode"]
    if all("outcome" in e for e in eps):
        return (
            sum(e["outcome"] == "failure" for e in eps),
            sum(e["outcome"] == "timeout" for e in eps),
        )
    kw = ev.get("env_kwargs", {})
    horizon = kw.get("ttm_wrapper", {}).get("horizon") or kw.get("max_steps")
    if not horizon:
        return None, None
    lost = [e for e in eps if not e["success"]]
    early = sum(e["length"] < horizon for e in lost)
    return early, len(lost) - early


def cell_row(run: Path) -> dict:
    """One core's cell: success with its interval, how the rest ended, budget and wall times."""
    ev = json.loads((run / "eval" / "eval.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    timing = run / "timing.json"
    failures, timeouts = outcome_counts(ev)
    return {
        "success_rate": ev["success_rate"],
        "successes": ev["successes"],
        "episodes": ev["episodes_run"],
        "ci95_wilson": ev["ci95_wilson"],
        "failures": failures,
        "timeouts": timeouts,
        "train_steps": summary["steps"],
        "parameters": summary["parameters"],
        "train_wall_s": json.loads(timing.read_text())["train_wall_s"] if timing.exists() else None,
        "eval_wall_s": ev.get("wall_time_s"),
    }


def _model_options(run: Path) -> dict:
    """The table options a trained cell was built with, read from its config.json."""
    model = json.loads((run / "config.json").read_text())["model"]
    return {
        "object_state": "object" in model.get("obs_keys", ()),
        "write_gate": bool(model.get("ttm", {}).get("write_gate", False)),
        "aux_final_keys": tuple(model.get("aux_final_keys", ())),
    }


def options_label(options: dict) -> str:
    """', gated write, final-state loss (robot0_eef_pos)' style row suffix ('' for neither)."""
    parts = ["object state (ablation)"] if options.get("object_state") else []
    parts += ["gated write"] if options.get("write_gate") else []
    if options.get("aux_final_keys"):
        parts.append(f"final-state loss ({' '.join(options['aux_final_keys'])})")
    return "".join(", " + p for p in parts)


def _check_options(
    run: Path, write_gate: bool, aux_final_keys: tuple[str, ...], object_state: bool = False
) -> None:
    """A cell on disk was trained with or without the recipe options; refuse to mix."""
    asked = {
        "object_state": object_state,
        "write_gate": write_gate,
        "aux_final_keys": tuple(aux_final_keys),
    }
    if not (run / "config.json").exists() or _model_options(run) == asked:
        return

    def say(o: dict) -> str:
        return options_label(o).removeprefix(", ").replace(", ", " and ") or "neither option"

    raise ValueError(
        f"{run} was trained with {say(_model_options(run))}, and this table asks for"
        f" {say(asked)} (--write-gate, --aux-final-keys, --object-state). Ask for the same, or"
        " another --out."
    )


def run_cell(
    root: Path,
    core: str,
    steps: int | None,
    eval_episodes: int,
    seed: int,
    write_gate: bool = False,
    aux_final_keys: tuple[str, ...] = (),
    object_state: bool = False,
) -> Path:
    """Train `core` on root/demos.hdf5 with the default recipe (`ttm-train --dataset ...
    --policy core`, `--steps` when given) and evaluate it; returns its eval.json (reused if
    done). Ablations: `write_gate` gives TTM cores the gated write (TTMConfig.write_gate);
    `aux_final_keys` adds the final-state loss to any core (PolicyConfig.aux_final_keys);
    `object_state` adds the simulator's object poses to the observations."""
    from train.presets import preset
    from train.train import infer_obs_keys

    data = root / "demos.hdf5"
    cfg = preset("cpu", dataset=data, out=root / core, policy=core, seed=seed)
    if steps:
        cfg.steps = steps
    if not torch.cuda.is_available():
        cfg.threads = 1  # two cells at a time on 2 cores
    if object_state:
        cfg.obs_keys = infer_obs_keys(data) + ("object",)
    cfg.model.ttm = replace(cfg.model.ttm, write_gate=write_gate)
    cfg.model.aux_final_keys = tuple(aux_final_keys)
    _check_options(cfg.out, write_gate, aux_final_keys, object_state)
    return train_and_evaluate(cfg, eval_episodes, seed)


def train_and_evaluate(cfg, eval_episodes: int, seed: int) -> Path:
    """Train `cfg` (a TrainConfig; resumed if its run stopped early) and evaluate its last
    checkpoint over `eval_episodes` seeded episodes; returns the eval.json (both reused when
    done). The training wall time goes to `cfg.out/timing.json`, summed over resumes."""
    from eval.evaluate import EvalConfig, evaluate
    from eval.quickstart import eval_current
    from train.resume import checkpoint_steps
    from train.train import train

    timing = cfg.out / "timing.json"
    done = checkpoint_steps(cfg.out)
    if not (done and done[-1] >= cfg.steps):
        t0 = time.perf_counter()
        train(replace(cfg, resume=bool(done)))
        spent = time.perf_counter() - t0
        if done:  # resumed: add to the time spent before the interruption, when it was recorded
            spent += (
                json.loads(timing.read_text()).get("train_wall_s", 0.0) if timing.exists() else 0
            )
        timing.write_text(json.dumps({"train_wall_s": spent, "resumed": bool(done)}))
    last = cfg.out / "checkpoints" / "last"
    ev_path = cfg.out / "eval" / "eval.json"
    if not eval_current(ev_path, last):
        evaluate(
            EvalConfig(
                checkpoint=last, episodes=eval_episodes, envs=2, seed=seed, out=ev_path.parent
            )
        )
    return ev_path


def _collection(data: Path) -> dict:
    """The collection summary `ttm-collect` wrote beside `data` ({} for a file without one)."""
    summary = Path(f"{data}.summary.json")
    return json.loads(summary.read_text()) if summary.exists() else {}


def _paired(record: dict) -> bool:
    """Whether a collection summary's run recorded each scene once per cue."""
    return bool(record.get("args", {}).get("paired_cues", False))


def _check_demos(data: Path, episodes: int, paired_cues: bool) -> None:
    """Cells on disk were collected for one episode count, with or without paired cues; refuse
    to mix another in. The count asked for is the collection summary's `episodes_tried` (the
    expert's failed episodes are not kept, so the file may hold fewer demonstrations)."""
    import h5py

    from envs.hdf5 import demo_names

    with h5py.File(data, "r") as f:
        have = len(demo_names(f))
    record = _collection(data)
    asked = record.get("episodes_tried", have)
    if asked != episodes:
        raise ValueError(
            f"{data} holds {have} demonstrations from {asked} episodes, not the {episodes} asked"
            f" for: its cells were trained on them. Pass --episodes {asked}, or another --out"
            f" for {episodes}."
        )
    paired = _paired(record)
    if paired != paired_cues:
        raise ValueError(
            f"{data} was collected {'with' if paired else 'without'} paired cues, and this table"
            f" asks for demonstrations {'with' if paired_cues else 'without'}: its cells were"
            f" trained on them. {'Pass --paired-cues' if paired else 'Drop --paired-cues'}, or"
            " another --out."
        )


def run_table(
    task: str,
    delays: tuple[int, ...],
    cores: tuple[str, ...],
    out: Path,
    episodes: int | None = None,
    steps: int | None = None,
    eval_episodes: int = 50,
    image_size: int | None = None,
    cameras: tuple[str, ...] | None = None,
    seed: int = 0,
    paired_cues: bool = False,
    write_gate: bool = False,
    aux_final_keys: tuple[str, ...] = (),
    object_state: bool = False,
) -> dict:
    """Run the missing cells of `task`'s rows; `delays=()` means one row without a delay.
    `paired_cues` records each scene once per cue (`ttm-collect --paired-cues`);
    `write_gate` and `aux_final_keys` change the training recipe (see `run_cell`)."""
    from envs import task_spec
    from envs.collect import Args, collect
    from eval.compare import compare

    r = task_spec(task).recipe
    episodes = episodes or r.episodes
    image_size = image_size or r.image_size
    cameras = cameras or r.cameras
    unknown = [c for c in cores if c not in CORES]
    if unknown:
        raise ValueError(f"unknown cores {unknown}; known: {', '.join(CORES)}")
    for delay in (delays or (None,)) if cores else ():  # no cores: only rewrite the tables
        root = cell_dir(out, task, delay)
        data = root / "demos.hdf5"
        if data.exists():
            _check_demos(data, episodes, paired_cues)
            for core in cores:  # before anything is trained
                _check_options(root / core, write_gate, aux_final_keys, object_state)
        else:
            t0 = time.perf_counter()
            collect(
                Args(
                    task=task,
                    out=data,
                    episodes=episodes,
                    workers=2,
                    cameras=cameras,
                    image_size=image_size,
                    seed=seed,
                    delay_steps=delay,
                    overwrite=True,
                    paired_cues=paired_cues,
                )
            )
            (root / "collect_timing.json").write_text(
                json.dumps({"collect_wall_s": time.perf_counter() - t0})
            )
        for core in cores:
            run_cell(
                root, core, steps, eval_episodes, seed, write_gate, aux_final_keys, object_state
            )
    # The table lists every core evaluated so far at every delay on disk: other processes
    # (or earlier calls) may have run other cores or delays.
    rows, evals, on_disk = {}, [], cells_on_disk(out, task)
    for delay, root in on_disk:
        for core in CORES:
            ev_path = root / core / "eval" / "eval.json"
            if ev_path.exists():
                name = f"{task}/delay{delay}/{core}" if delay is not None else f"{task}/{core}"
                rows[name] = cell_row(root / core)
                evals.append(ev_path)
    md, png = compare(
        evals,
        out / f"table_{task}",
        title=f"{task}: success over {eval_episodes} episodes (95% Wilson interval)",
    )
    payload = {
        "task": task,
        "delays": [d for d, _ in on_disk if d is not None],
        "cores": [c for c in CORES if any(k.endswith("/" + c) for k in rows)],
        "demos": episodes,
        "paired_cues": paired_cues,
        "object_state": object_state,
        "write_gate": write_gate,
        "aux_final_keys": list(aux_final_keys),
        "cameras": cameras,
        "image_size": image_size,
        "train_steps": sorted({r["train_steps"] for r in rows.values()}),
        "eval_episodes": eval_episodes,
        "hardware": {
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "cuda": torch.cuda.is_available(),
        },
        "rows": rows,
        "table": str(md),
        "chart": str(png),
    }
    (out / f"results_{task}.json").write_text(json.dumps(payload, indent=2, default=str))
    (out / "results.md").write_text(summary_markdown(out))
    return payload


def summary_markdown(out: Path) -> str:
    """Every task's rows under `out` as markdown: success with interval per core (cells not
    yet run say so), how the other episodes ended, and wall times."""
    import envs

    header = ["| task | " + " | ".join(CORES) + " |", "|---" * (len(CORES) + 1) + "|"]
    success, ends = list(header), list(header)
    walls = []
    for task in envs.TASKS:
        for delay, root in cells_on_disk(out, task):
            name = task if delay is None else f"{task}, delay {delay}"
            if _paired(_collection(root / "demos.hdf5")):
                name += ", paired cues"
            trained = [root / c for c in CORES if (root / c / "config.json").exists()]
            if trained:
                name += options_label(_model_options(trained[0]))
            cells, ended, wall = [], [], []
            collect = root / "collect_timing.json"
            if collect.exists():
                secs = json.loads(collect.read_text())["collect_wall_s"]
                wall.append(f"collection {secs / 60:.1f} min")
            for core in CORES:
                if not (root / core / "eval" / "eval.json").exists():
                    cells.append("not yet run")
                    ended.append("-")
                    continue
                r = cell_row(root / core)
                lo, hi = r["ci95_wilson"]
                cells.append(
                    f"{r['success_rate']:.0%} ({r['successes']}/{r['episodes']}, "
                    f"[{lo:.0%}, {hi:.0%}])"
                )
                ended.append("?" if r["failures"] is None else f"{r['failures']} / {r['timeouts']}")
                t = f"{r['train_wall_s'] / 60:.0f} min" if r["train_wall_s"] else "untimed"
                wall.append(f"{core} {t} + eval {r['eval_wall_s'] / 60:.1f} min")
            success.append(f"| {name} | " + " | ".join(cells) + " |")
            ends.append(f"| {name} | " + " | ".join(ended) + " |")
            walls.append(f"- {name}: " + "; ".join(wall) + ".")
    return "\n".join(
        [
            "Success over the seeded evaluation episodes (95% Wilson interval):",
            "",
            *success,
            "",
            "Episodes that did not succeed, as failures / timeouts (a failure ended early, on a"
            " cued task the wrong choice; a timeout ran out of steps):",
            "",
            *ends,
            "",
            "Wall time per cell (training + evaluation):",
            "",
            *walls,
            "",
        ]
    )
