"""The main job at a tiny budget: every stage runs and report.md points at real files; a
second run reuses what is there."""

import json

from eval.quickstart import QuickstartConfig, run


def test_quickstart_tiny(tmp_path, capsys):
    cfg = QuickstartConfig(out=tmp_path / "qs", episodes=4, steps=4, eval_episodes=2, eval_envs=1)
    result = run(cfg)
    files = result["files"]
    for key in (
        "demonstrations",
        "checkpoint",
        "training_curve",
        "eval",
        "video",
        "export",
        "memory_plot_cue0",
        "memory_plot_cue1",
        "report",
    ):
        assert (tmp_path / "qs").resolve() in [
            p.resolve() for p in [*type(tmp_path)(files[key]).parents]
        ], key
    report = (tmp_path / "qs" / "report.md").read_text()
    ev = json.loads((tmp_path / "qs" / "eval" / "eval.json").read_text())
    assert f"{ev['successes']}/{ev['episodes_run']}" in report and "p99" in report
    assert "Reproduce: `bash scripts/quickstart.sh --out " in report  # no --task: the default
    for rel in ("training_curve.png", "introspect/memory_cue0.png", "eval/video_0.mp4"):
        assert f"({rel})" in report and (tmp_path / "qs" / rel).stat().st_size > 0
    capsys.readouterr()
    run(cfg)  # everything is reused
    out = capsys.readouterr().out
    assert out.count("reusing") == 4


def test_quickstart_robosuite_flag(tmp_path):
    """`--task LiftCued` runs the same job on the robosuite memory task with its recipe: the
    agentview and wrist cameras at 64 px, the robot's proprioception and no object state, a
    10-step delay after the cue."""
    cfg = QuickstartConfig(
        out=tmp_path / "qs", task="LiftCued", episodes=2, steps=2, eval_episodes=1, eval_envs=1
    )
    files = run(cfg)["files"]
    env_args = json.loads((tmp_path / "qs/train/checkpoints/last/env_args.json").read_text())
    kwargs = env_args["env_kwargs"]
    assert env_args["env_name"] == "LiftCued" and kwargs["delay_steps"] == 10
    assert kwargs["ttm_wrapper"]["cameras"] == ["agentview", "robot0_eye_in_hand"]
    assert kwargs["ttm_wrapper"]["image_size"] == [64, 64]
    config = json.loads((tmp_path / "qs/train/checkpoints/last/config.json").read_text())
    assert config["policy"]["obs_keys"] == [
        "agentview_image",
        "robot0_eye_in_hand_image",
        "robot0_eef_pos",
        "robot0_eef_quat",
        "robot0_gripper_qpos",
    ]
    report = (tmp_path / "qs" / "report.md").read_text()
    assert "LiftCued" in report and "64x64" in report
    qs = tmp_path / "qs"
    assert (
        f"Reproduce: `bash scripts/quickstart.sh --task LiftCued --out {qs} --episodes 2 "
        "--steps 2 --eval-episodes 1 --eval-envs 1 --force`." in report
    )
    assert (tmp_path / "qs" / "introspect" / "memory_cue1.png").stat().st_size > 0
    assert files["report"].endswith("report.md")
