"""Smoke runs of `ttm-bench` subcommands on tiny budgets: tables, JSON and plots are written."""

import json
import subprocess
import sys

import pytest
import torch

from eval.bench import main
from tests.conftest import ROBOMIMIC_FIXTURE as FIXTURE


def test_step_latency_writes_json_and_plot(tmp_path):
    main(
        [
            "step-latency",
            "--histories",
            "1",
            "8",
            "--dim",
            "32",
            "--tokens",
            "4",
            "--layers",
            "1",
            "--repeats",
            "3",
            "--out",
            str(tmp_path),
        ]
    )
    data = json.loads((tmp_path / "step_latency.json").read_text())
    assert set(data["results"]) == {"ttm", "transformer-window6", "transformer-full", "lstm"}
    full = data["results"]["transformer-full"]
    assert full["8"]["state_bytes"] > full["1"]["state_bytes"]  # the full-history cache grows
    ttm = data["results"]["ttm"]
    assert ttm["8"]["state_bytes"] == ttm["1"]["state_bytes"]  # TTM memory is constant
    assert (tmp_path / "step_latency.png").stat().st_size > 10_000


def test_recall_study_writes_json(tmp_path):
    main(["recall", "--seeds", "0", "--max-iters", "2", "--steps", "5", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "recall.json").read_text())
    assert {r["memory_init"] for r in data["runs"]} == {"zeros", "learned"}
    # Each run's numbers are those of its own seeded TTM: recompute the untrained retention.
    from eval.recall import RecallConfig, small_ttm
    from ttm_policy.introspect import token_retention

    cfg = RecallConfig(steps=5, max_iters=2)
    for r in data["runs"]:
        torch.manual_seed(r["seed"])
        ttm = small_ttm(cfg.dim, memory_init=r["memory_init"])
        probe = torch.randn(64, cfg.steps, cfg.tokens, cfg.dim)
        assert token_retention(ttm, probe)[-1].item() == pytest.approx(
            r["retention_init"], abs=1e-6
        )


def test_train_throughput_on_the_robomimic_fixture(tmp_path):
    out = tmp_path / "not" / "yet"  # --out is created
    main(
        [
            "train-throughput",
            "--dataset",
            str(FIXTURE),
            "--cores",
            "ttm",
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--out",
            str(out),
        ]
    )
    r = json.loads((out / "train_throughput.json").read_text())["results"]["ttm"]
    assert r["images_per_s"] == 2 * r["frames_per_s"] > 0  # two cameras
    assert (out / "train_throughput.png").stat().st_size > 5_000


def test_console_script_help_and_exit_code():
    out = subprocess.run(
        [sys.executable, "-m", "eval.bench", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "step-latency" in out.stdout and "train-throughput" in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        # envs.collect.UsageError, raised while collecting the row's demonstrations
        (["--cameras", "frontview"], "cannot make PointCue with"),
        # ValueError of eval.results, before anything is collected
        (["--cores", "no-such-core"], "unknown cores ['no-such-core']"),
    ],
)
def test_results_usage_error_is_one_line_and_exit_2(tmp_path, args, message):
    cmd = [sys.executable, "-m", "eval.bench", "results", "--task", "PointCue", "--delays", "3"]
    cmd += ["--episodes", "2", "--out", str(tmp_path), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ttm-bench: error: "), res.stderr
    assert message in lines[0]


def test_control_latency_and_rollout_throughput(tmp_path):
    main(
        [
            "control-latency",
            "--cores",
            "ttm",
            "transformer-full",
            "--histories",
            "1",
            "3",
            "--repeats",
            "2",
            "--image-size",
            "48",
            "--out",
            str(tmp_path),
        ]
    )
    r = json.loads((tmp_path / "control_latency.json").read_text())["results"]
    assert set(r) == {"ttm", "transformer-full"} and all(r[c]["3"]["median_ms"] > 0 for c in r)
    main(
        [
            "rollout-throughput",
            "--task",
            "PointCue",
            "--envs",
            "1",
            "2",
            "--steps",
            "5",
            "--out",
            str(tmp_path / "rollouts"),  # not there yet: created
        ]
    )
    r = json.loads((tmp_path / "rollouts" / "rollout_throughput.json").read_text())["results"]
    assert set(r) == {"images/1", "images/2", "no_images/1", "no_images/2"}
    assert all(v["env_steps_per_s"] > 0 for v in r.values())
    assert (tmp_path / "rollouts" / "rollout_throughput.png").stat().st_size > 5_000


def test_memory_sweep_trains_evaluates_and_resumes(tmp_path, capsys):
    """Two TTM memory sizes, one LSTM width, a windowed and a full-history Transformer and the
    memory-less floor on real PointCue demos: every cell's row is its own run's numbers, and a
    second call reuses the finished cells."""
    from envs.collect import Args, collect

    data = tmp_path / "pc.hdf5"
    collect(Args(task="PointCue", out=data, episodes=4, seed=0, valid_fraction=0.25))
    args = ["memory-sweep", "--dataset", str(data), "--ttm-memory", "2", "4"]
    args += ["--lstm-hidden", "8", "--transformer-window", "2", "0"]
    args += ["--steps", "2", "--episodes", "2", "--out", str(tmp_path / "s")]
    main(args)
    cells = json.loads((tmp_path / "s" / "memory_sweep.json").read_text())["cells"]
    runs = ["ttm_M2", "ttm_M4", "lstm_H8", "transformer_K2", "transformer_full", "ttm-memoryless"]
    assert [c["run"] for c in cells] == runs
    by = {c["run"]: c for c in cells}
    # M adds state (M x D floats at D = 32) and almost no parameters; the LSTM carries (h, c)
    assert by["ttm_M4"]["state_floats"] == 2 * by["ttm_M2"]["state_floats"] == 4 * 32
    assert (
        0
        < by["ttm_M4"]["parameters"] - by["ttm_M2"]["parameters"]
        < 0.02 * by["ttm_M2"]["parameters"]
    )
    assert by["lstm_H8"]["state_floats"] == 2 * 2 * 8
    # the window is the only difference: same parameters; K=2 caches one step's keys and
    # values, the full history has no fixed state
    assert by["transformer_K2"]["parameters"] == by["transformer_full"]["parameters"]
    assert by["transformer_full"]["state_floats"] is None
    assert by["transformer_K2"]["state_floats"] > 0
    cfgs = {r: json.loads((tmp_path / "s" / r / "checkpoints" / "last" / "config.json").read_text())
            for r in ("transformer_K2", "transformer_full")}  # fmt: skip
    assert [c["policy"]["transformer"]["window"] for c in cfgs.values()] == [2, None]
    for c in cells:
        ev = json.loads((tmp_path / "s" / c["run"] / "eval" / "eval.json").read_text())
        assert (c["successes"], c["episodes"]) == (ev["successes"], 2)
    assert (tmp_path / "s" / "memory_sweep.png").stat().st_size > 10_000
    stamp = (tmp_path / "s" / "ttm_M2" / "eval" / "eval.json").stat().st_mtime
    main(args)  # everything on disk: nothing retrained or re-evaluated
    assert (tmp_path / "s" / "ttm_M2" / "eval" / "eval.json").stat().st_mtime == stamp


def test_memory_items_pools_sweeps_by_the_items_their_task_cues(tmp_path, capsys):
    """Real memory sweeps on SequenceCue with one and with two cued items (tiny budgets, one
    of them twice as if a second seed): each cell's point at a size pools its sweeps' episodes,
    the bits come from the task's env_args, and a sweep on a task without items is refused."""
    from envs.collect import Args, collect

    sweeps = []
    for items, out in ((1, "one"), (2, "two"), (2, "two_again")):
        data = tmp_path / f"sc{items}.hdf5"
        if not data.exists():
            kwargs = json.dumps({"n_goals": 3, "n_items": items})
            collect(Args(task="SequenceCue", out=data, episodes=4, env_kwargs=kwargs,
                         image_size=32, valid_fraction=0.25))  # fmt: skip
        main(["memory-sweep", "--dataset", str(data), "--ttm-memory", "2", "--lstm-hidden", "8",
              "--transformer-window", "--no-memoryless", "--steps", "2", "--episodes", "2", "--out", str(tmp_path / out)])  # fmt: skip
        sweeps.append(str(tmp_path / out))
    main(["memory-items", "--sweeps", *sweeps, "--out", str(tmp_path / "items")])
    payload = json.loads((tmp_path / "items" / "memory_items.json").read_text())
    assert len(payload["cells"]) == 6  # 2 cells x 3 sweeps
    points = {(p["run"], p["n_items"]): p for p in payload["pooled"]}
    assert set(points) == {(r, i) for r in ("ttm_M2", "lstm_H8") for i in (1, 2)}
    for (run, items), p in points.items():
        rows = [c for c in payload["cells"] if c["run"] == run and c["n_items"] == items]
        assert p["sweeps"] == len(rows) == (1 if items == 1 else 2)
        assert p["episodes"] == 2 * len(rows)
        assert p["successes"] == sum(c["successes"] for c in rows)
        assert p["bits"] == pytest.approx(1.585 if items == 1 else 2.585, abs=1e-3)  # log2 3, 6
    assert (tmp_path / "items" / "memory_items.png").stat().st_size > 10_000
    # a PointCue sweep has no items to count
    pc = tmp_path / "pc.hdf5"
    collect(Args(task="PointCue", out=pc, episodes=4, seed=0, valid_fraction=0.25))
    main(["memory-sweep", "--dataset", str(pc), "--ttm-memory", "2", "--lstm-hidden", "8",
          "--transformer-window", "--no-memoryless", "--steps", "2", "--episodes", "2", "--out", str(tmp_path / "pc")])  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main(["memory-items", "--sweeps", str(tmp_path / "pc"), "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2
    assert "no n_items" in capsys.readouterr().err


def test_observation_cost_times_each_camera_set_the_dataset_has(tmp_path):
    """One row per camera set the file has (a camera it lacks is left out), each with its
    training, control and simulation time and the ratio to the first row."""
    main(
        [
            "observation-cost",
            "--datasets",
            str(FIXTURE),
            "--cameras",
            "agentview",
            "nope",
            "agentview+robot0_eye_in_hand",
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--control-steps",
            "2",
            "--env-steps",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    rows = json.loads((tmp_path / "observation_cost.json").read_text())["results"]
    assert list(rows) == ["84px agentview", "84px agentview+robot0_eye_in_hand"]
    one, two = rows.values()
    assert one["train_time_ratio"] == one["control_ratio"] == one["env_step_ratio"] == 1.0
    assert two["cameras"] == ["agentview", "robot0_eye_in_hand"]
    assert two["parameters"] > one["parameters"]  # a second camera's tokenizer
    for r in (one, two):
        assert r["train_frames_per_s"] > 0
        assert 0 < r["control_ms"]["min_ms"] <= r["control_ms"]["median_ms"]
        assert r["env_step_ms"]["median_ms"] > 0
    assert (tmp_path / "observation_cost.png").stat().st_size > 5_000
