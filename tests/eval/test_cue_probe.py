"""scripts/cue_probe.py on real PointCue checkpoints: the gap curve and its plot."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from tests.eval.test_memory_plot import tiny_policy

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cue_probe.py"


@pytest.fixture(scope="module")
def cue_probe():
    spec = importlib.util.spec_from_file_location("cue_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save(policy, path: Path) -> Path:
    policy.save_pretrained(path)
    env_args = {"env_name": "ttm/PointCue-v0", "type": 2, "env_kwargs": {"delay_steps": 4}}
    (path / "env_args.json").write_text(json.dumps(env_args))
    return path


def test_state_gaps_are_relative_and_nan_without_a_state(cue_probe):
    a = {"states": [np.array([3.0, 4.0]), np.array([1.0, 0.0])]}
    b = {"states": [np.array([3.0, 4.0]), np.array([0.0, 0.0]), np.array([9.0, 9.0])]}
    np.testing.assert_allclose(cue_probe.state_gaps(a, b), [0.0, 1.0])  # the shorter episode
    assert np.isnan(cue_probe.state_gaps({"states": [None]}, {"states": [None]})).all()


def test_probe_sees_the_cue_in_an_untrained_ttm_and_plots_every_checkpoint(
    cue_probe, tmp_path, capsys
):
    """The cue changes the image, so even an untrained TTM's memories differ under the two
    cues from the first step; a core without state gives no curve and is left off the plot."""
    ttm = save(tiny_policy(), tmp_path / "ttm" / "checkpoints" / "last")
    none = save(tiny_policy(core="none"), tmp_path / "none" / "checkpoints" / "last")
    curve, hold = cue_probe.probe(str(ttm), [0])
    assert hold == (5, 9)  # PointCue: 5 cue steps, then the 4-step delay
    assert len(curve) >= 10 and (curve[:5] > 1e-4).all()
    out = tmp_path / "gap.png"
    cue_probe.main([f"untrained TTM={ttm}", str(none), "0", "--plot", str(out)])
    printed = capsys.readouterr().out
    assert "== untrained TTM" in printed and "== none" in printed
    assert "no state (memory-less core)" in printed
    assert out.stat().st_size > 10_000
