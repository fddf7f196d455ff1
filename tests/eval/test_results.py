"""`ttm-bench results` at a tiny budget: cells are trained and evaluated once, reused after,
and the table lists every core evaluated so far, whichever call ran it."""

import json

import pytest

from eval.results import run_table


def test_results_table_runs_reuses_and_merges_cores_and_delays(tmp_path):
    first = run_table("PointCue", (3,), ("ttm",), tmp_path, episodes=4, steps=2, eval_episodes=2)
    assert list(first["rows"]) == ["PointCue/delay3/ttm"]
    cell = tmp_path / "PointCue_delay3"
    assert json.loads((cell / "demos.hdf5.summary.json").read_text())["episodes_kept"] == 4
    stamp = (cell / "ttm" / "eval" / "eval.json").stat().st_mtime_ns

    second = run_table("PointCue", (3,), ("none",), tmp_path, episodes=4, steps=2, eval_episodes=2)
    assert list(second["rows"]) == ["PointCue/delay3/ttm", "PointCue/delay3/none"]
    assert (cell / "ttm" / "eval" / "eval.json").stat().st_mtime_ns == stamp  # reused
    row = second["rows"]["PointCue/delay3/none"]
    assert row["episodes"] == 2 and row["train_steps"] == 2 and row["train_wall_s"] > 0
    saved = json.loads((tmp_path / "results_PointCue.json").read_text())
    assert saved["cores"] == ["ttm", "none"] and saved["demos"] == 4
    assert saved["paired_cues"] is False
    table = (tmp_path / "table_PointCue" / "compare.md").read_text()
    assert "| task | ttm | none |" in table and "/2, [" in table
    assert row["successes"] + row["failures"] + row["timeouts"] == 2

    # A call for another delay keeps the finished delay in the table and the summary.
    third = run_table("PointCue", (5,), ("none",), tmp_path, episodes=4, steps=2, eval_episodes=2)
    assert list(third["rows"]) == [*second["rows"], "PointCue/delay5/none"]
    assert third["delays"] == [3, 5]
    summary = (tmp_path / "results.md").read_text()
    assert "| PointCue, delay 3 | " in summary and "/2, [" in summary
    assert "| PointCue, delay 5 | not yet run | not yet run |" in summary
    assert "- PointCue, delay 3: collection " in summary

    # More steps for a finished cell: training continues and the old evaluation is redone.
    more = run_table("PointCue", (3,), ("ttm",), tmp_path, episodes=4, steps=4, eval_episodes=2)
    assert more["rows"]["PointCue/delay3/ttm"]["train_steps"] == 4
    assert (cell / "ttm" / "eval" / "eval.json").stat().st_mtime_ns != stamp
    assert json.loads((cell / "ttm" / "timing.json").read_text())["resumed"] is True
    summary = (tmp_path / "results.md").read_text()

    # Another demonstration count on the same cells is refused before anything is trained.
    with pytest.raises(
        ValueError, match="holds 4 demonstrations from 4 episodes, not the 6 asked for"
    ):
        run_table("PointCue", (3,), ("lstm",), tmp_path, episodes=6, steps=2, eval_episodes=2)
    # So is a table on paired-cue demonstrations over a row collected without them.
    with pytest.raises(ValueError, match="collected without paired cues, and this table asks"):
        run_table("PointCue", (3,), ("lstm",), tmp_path, 4, 2, 2, paired_cues=True)
    assert not (cell / "lstm").exists()

    # No cores: nothing is collected or trained, the tables are rewritten.
    (tmp_path / "results.md").unlink()
    fourth = run_table("PointCue", (7,), (), tmp_path, episodes=4, steps=2, eval_episodes=2)
    assert fourth["rows"] == more["rows"] and not (tmp_path / "PointCue_delay7").exists()
    assert (tmp_path / "results.md").read_text() == summary

    # The count that matters is the one asked at collection: had the expert failed 2 of 6
    # episodes, the 4 demonstrations kept are the row's for --episodes 6.
    record = cell / "demos.hdf5.summary.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "episodes_tried": 6}))
    sixth = run_table("PointCue", (3,), ("lstm",), tmp_path, episodes=6, steps=2, eval_episodes=2)
    assert "PointCue/delay3/lstm" in sixth["rows"]


def test_results_table_on_paired_cue_demonstrations(tmp_path):
    table = run_table("PointCue", (3,), ("none",), tmp_path, 4, 2, 2, paired_cues=True)
    assert table["paired_cues"] is True
    record = json.loads((tmp_path / "PointCue_delay3" / "demos.hdf5.summary.json").read_text())
    assert record["args"]["paired_cues"] is True
    assert "| PointCue, delay 3, paired cues | " in (tmp_path / "results.md").read_text()


def test_results_table_with_the_gated_write_and_final_state_loss(tmp_path):
    """The recipe options reach the trained cells, the JSON and the row label; a row trained
    without them is refused for a table asking for them, before anything is trained."""
    opts = dict(write_gate=True, aux_final_keys=("robot0_eef_pos",))
    table = run_table("PointCue", (3,), ("ttm", "lstm"), tmp_path, 4, 2, 2, **opts)
    assert table["write_gate"] is True and table["aux_final_keys"] == ["robot0_eef_pos"]
    cell = tmp_path / "PointCue_delay3"
    for core in ("ttm", "lstm"):
        model = json.loads((cell / core / "config.json").read_text())["model"]
        assert model["ttm"]["write_gate"] is True
        assert model["aux_final_keys"] == ["robot0_eef_pos"]
        metrics = (cell / core / "metrics.jsonl").read_text()
        assert '"losses/aux_final"' in metrics
    label = "| PointCue, delay 3, gated write, final-state loss (robot0_eef_pos) | "
    assert label in (tmp_path / "results.md").read_text()
    stamp = (cell / "ttm" / "eval" / "eval.json").stat().st_mtime_ns
    with pytest.raises(
        ValueError,
        match=r"trained with gated write and final-state loss \(robot0_eef_pos\), and this"
        " table asks for neither option",
    ):
        run_table("PointCue", (3,), ("none", "ttm"), tmp_path, 4, 2, 2)
    assert not (cell / "none").exists()
    with pytest.raises(ValueError, match=r"asks for gated write \(--write-gate"):
        run_table("PointCue", (3,), ("lstm",), tmp_path, 4, 2, 2, write_gate=True)
    assert (cell / "ttm" / "eval" / "eval.json").stat().st_mtime_ns == stamp


def test_object_state_is_a_labelled_ablation(tmp_path):
    """`object_state` adds the simulator's object poses to the cameras and proprioception the
    cells see by default (tests/eval/test_quickstart.py checks the default), and the row says
    so."""
    table = run_table("Lift", (), ("none",), tmp_path, 2, 2, 1, image_size=32, object_state=True)
    assert table["object_state"] is True
    keys = json.loads((tmp_path / "Lift" / "none" / "config.json").read_text())["model"]["obs_keys"]
    assert keys == [
        "agentview_image",
        "robot0_eye_in_hand_image",
        "robot0_eef_pos",
        "robot0_eef_quat",
        "robot0_gripper_qpos",
        "object",
    ]
    assert "| Lift, object state (ablation) | " in (tmp_path / "results.md").read_text()
