"""A core added through the registry (`ttm_policy/cores.py`) goes the whole way: the GRU,
added as one module plus one registry entry (and its config field), trains with
`ttm-train --policy gru`, acts in `ttm-eval`, exports with `ttm-export` and runs in the
torch-free runtime with the state names it declares."""

import json

import numpy as np

from envs.collect import Args, collect
from eval.evaluate import main as evaluate
from train.train import main as train
from ttm_policy.cores import CORES
from ttm_policy.export import main as export
from ttm_policy.runtime import OnnxPolicy


def test_gru_trains_evaluates_and_exports(tmp_path, capsys):
    assert CORES["gru"].module.STATE == {"gru_h": "B, L, Hd"}
    data = tmp_path / "pointcue.hdf5"
    collect(Args(task="PointCue", out=data, episodes=4, seed=0, valid_fraction=0.25))
    run = tmp_path / "run"
    train(
        [
            *("--dataset", str(data), "--out", str(run), "--policy", "gru", "--steps", "4"),
            *("--batch-size", "2", "--save-every", "4", "--valid-every", "0"),
            *("--model.dim", "32", "--model.gru.hidden", "48", "--threads", "1"),
        ]
    )
    config = json.loads((run / "checkpoints" / "last" / "config.json").read_text())["policy"]
    assert config["core"] == "gru" and config["gru"] == {
        "dim": 32,
        "input_tokens": config["gru"]["input_tokens"],
        "hidden": 48,
        "layers": 2,  # the cpu preset's, as the LSTM's
    }
    evaluate(["--checkpoint", str(run / "checkpoints" / "last"), "--episodes", "2"])
    report = json.loads((run / "eval" / "last" / "eval.json").read_text())
    assert report["core"] == "gru" and report["episodes_run"] == len(report["per_episode"]) == 2
    export(["--checkpoint", str(run / "checkpoints" / "last"), "--out", str(tmp_path / "x")])
    policy = OnnxPolicy(tmp_path / "x")
    assert [s["name"] for s in policy.spec["state"]] == ["gru_h"]
    assert policy.spec["state"][0]["shape"] == [2, 48]  # (layers, hidden)
    obs = {
        o["name"]: (
            np.zeros(o["shape"], np.uint8) if o["kind"] == "image" else np.zeros(o["shape"])
        )
        for o in policy.spec["observations"]
    }
    before = policy.state["gru_h"].copy()
    action = policy(obs)
    assert policy.last_error is None and action.shape == (7,) and np.isfinite(action).all()
    assert not np.array_equal(policy.state["gru_h"], before)  # the state moved
