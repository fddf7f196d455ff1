"""`ttm-bench compare`: eval.json files -> a markdown table and a bar chart with intervals."""

import json

import pytest

from envs.rollout import wilson
from eval.bench import main


def fake_eval(path, env, core, k, n, overrides=None):
    """An eval.json as ttm-eval writes it (the fields compare reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "env": env,
                "core": core,
                "successes": k,
                "episodes_run": n,
                "success_rate": k / n,
                "ci95_wilson": list(wilson(k, n)),
                "env_overrides": overrides or {},
            }
        )
    )
    return path


def test_table_and_chart(tmp_path):
    paths = [
        fake_eval(tmp_path / "a.json", "ttm/PointCue-v0", "ttm", 48, 50),
        fake_eval(tmp_path / "b.json", "ttm/PointCue-v0", "ttm-memoryless", 26, 50),
        fake_eval(tmp_path / "c.json", "ttm/PointCue-v0", "ttm", 40, 50, {"delay_steps": 30}),
    ]
    main(["compare", *map(str, paths), "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "| task | ttm | ttm-memoryless |" in md
    assert "| PointCue | 96% (48/50, [87%, 99%]) | 52% (26/50, [39%, 65%]) |" in md
    assert "| PointCue (delay_steps=30) | 80% (40/50, [67%, 89%]) | not run |" in md
    assert (tmp_path / "out" / "compare.png").stat().st_size > 10_000


def test_rejects_files_that_are_not_eval_json(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(SystemExit) as e:
        main(["compare", str(bad), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "lacks 'success_rate'" in err


def test_rows_named_by_scalar_kwargs_and_cores_in_canonical_order(tmp_path):
    """Nested settings (a controller config that differs between datasets) do not name rows;
    cores come in the package's order whatever order the files are given in."""
    ctrl_a = {"controller_configs": {"body_parts": {"right": {}, "left": {}}}}
    ctrl_b = {"controller_configs": {"body_parts": {"right": {}}}}
    paths = [
        fake_eval(tmp_path / "a.json", "LiftCued", "none", 10, 50, {**ctrl_a, "delay_steps": 10}),
        fake_eval(tmp_path / "b.json", "LiftCued", "ttm", 39, 50, {**ctrl_b, "delay_steps": 10}),
        fake_eval(tmp_path / "c.json", "LiftCued", "ttm", 26, 50, {**ctrl_b, "delay_steps": 30}),
    ]
    main(["compare", *map(str, paths), "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "| task | ttm | none |" in md
    assert "| LiftCued (delay_steps=10) | 78% (39/50, [65%, 87%]) | 20% (10/50, [11%, 33%]) |" in md
    assert "| LiftCued (delay_steps=30) | 52% (26/50, [39%, 65%]) | not run |" in md
    assert "controller" not in md
