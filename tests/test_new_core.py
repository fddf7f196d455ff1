"""A core added through the registry (`ttm_policy/cores.py`) goes the whole way: the GRU,
added as one module plus one registry entry, trains with
`ttm-train --policy gru`, acts in `ttm-eval`, exports with `ttm-export` and runs in the
torch-free runtime with the state names it declares."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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


NEW_CORE = '''"""An exponential moving average of the step's tokens: the smallest stateful core."""

from dataclasses import dataclass

import torch
from torch import nn

from ttm_policy.state import unroll, where_reset


@dataclass
class EMAConfig:
    """Settings of the EMA core."""

    dim: int = 128
    input_tokens: int = 8
    decay: float = 0.9
    """Weight of the old average."""


class EMACore(nn.Module):
    STATE = {"ema": "B, N, D"}

    def __init__(self, cfg: EMAConfig):
        super().__init__()
        self.cfg, self.out_tokens = cfg, 1
        self.proj = nn.Linear(cfg.input_tokens * cfg.dim, cfg.dim)

    def init_memory(self, batch_size, device=None, dtype=None):
        w = self.proj.weight
        shape = (batch_size, self.cfg.input_tokens, self.cfg.dim)
        return torch.zeros(shape, device=device or w.device, dtype=dtype or w.dtype)

    def reset_memory(self, state, mask):
        return where_reset(mask, self.init_memory(mask.shape[0], state.device, state.dtype), state)

    def step(self, tokens, state):
        state = self.cfg.decay * state + (1 - self.cfg.decay) * tokens
        return self.proj(state.flatten(1)).unsqueeze(1), state

    def forward(self, tokens, memory=None, reset=None, bptt=None):
        state = self.init_memory(tokens.shape[0], tokens.device) if memory is None else memory
        return unroll(self.step, tokens, state, self.reset_memory, reset, bptt)
'''

RUN_NEW_CORE = """
import json, sys
from pathlib import Path
import numpy as np
from train.train import main as train
from ttm_policy.export import main as export
from ttm_policy.runtime import OnnxPolicy
data, run, out = map(Path, sys.argv[1:4])
train(["--dataset", str(data), "--out", str(run), "--policy", "ema", "--steps", "2",
       "--batch-size", "2", "--save-every", "2", "--valid-every", "0", "--threads", "1",
       "--model.dim", "32", "--model.ema.decay", "0.5"])
config = json.loads((run / "checkpoints" / "last" / "config.json").read_text())["policy"]
export(["--checkpoint", str(run / "checkpoints" / "last"), "--out", str(out)])
policy = OnnxPolicy(out)
obs = {o["name"]: np.zeros(o["shape"], np.uint8 if o["kind"] == "image" else np.float64)
       for o in policy.spec["observations"]}
action = policy(obs)
print(json.dumps({"core": config["core"], "ema": config["ema"],
                  "state": [s["name"] for s in policy.spec["state"]],
                  "finite": bool(np.isfinite(action).all())}))
"""


def test_a_new_core_is_one_module_and_one_registry_entry(tmp_path):
    """In a copy of the package: write one core module and add one entry (and its import) to
    the registry, nothing else. `ttm-train --policy ema --model.ema.decay 0.5` trains it,
    config.json records its settings, and the export runs in the runtime with its state."""
    root = Path(__file__).resolve().parents[1]
    copy = tmp_path / "repo"
    for package in ("ttm_policy", "train", "envs"):
        shutil.copytree(
            root / package, copy / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    (copy / "ttm_policy" / "ema_core.py").write_text(NEW_CORE)
    registry = copy / "ttm_policy" / "cores.py"
    text = registry.read_text()
    entry = 'CORES["ema"] = CoreSpec("ema", EMAConfig, EMACore, about="moving average")\n'
    text = text.replace("\nCore = Literal[", "\n" + entry + "\nCore = Literal[", 1)
    text = text.replace(
        "from __future__ import annotations\n",
        "from __future__ import annotations\n\nfrom ttm_policy.ema_core import EMACore, EMAConfig\n",
        1,
    )
    registry.write_text(text)
    data = tmp_path / "pointcue.hdf5"
    collect(Args(task="PointCue", out=data, episodes=2, seed=0, valid_fraction=0))
    result = subprocess.run(
        [sys.executable, "-c", RUN_NEW_CORE, str(data), str(tmp_path / "run"), str(tmp_path / "x")],
        cwd=copy, env={**os.environ, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["core"] == "ema" and report["ema"]["decay"] == 0.5 and report["ema"]["dim"] == 32
    assert report["state"] == ["ema"] and report["finite"]
