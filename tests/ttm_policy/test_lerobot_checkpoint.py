"""A checkpoint of LeRobot's `ttm` policy type -> our checkpoint (`ttm-convert lerobot-policy`).

The fixture tests/fixtures/lerobot_ttm_policy/ was written by LeRobot 0.4.4's own code with the
plugin (tests/envs/lerobot_policy_writer.py, under the LeRobot venv): `pretrained_model/` as
lerobot-train saves it, and `rollout.safetensors`, twelve control steps of that checkpoint run
as lerobot-eval runs it (LeRobot's processors around the plugin's select_action). Here, without
LeRobot: the converted checkpoint, fed the same frames and states as our env would give them,
must act as the plugin did.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from ttm_policy import TTMPolicy
from ttm_policy.checkpoint import ENV_ARGS_NAME, CheckpointError
from ttm_policy.lerobot_checkpoint import area_resize, lerobot_to_checkpoint

FIXTURE = Path(__file__).parents[1] / "fixtures" / "lerobot_ttm_policy"
PRETRAINED = FIXTURE / "pretrained_model"
RENAME = {
    "observation.images.front": "front_image",
    "observation.images.wrist": "wrist_image",
    "observation.state": "robot_state",
}


def rollout_actions(policy: TTMPolicy, keys: dict[str, str]) -> np.ndarray:
    """Our policy over the fixture's episode; `keys`: fixture array -> our obs key. Frames are
    resized as the `view="lerobot"` env resizes LeRobot's (`area_resize`)."""
    r = load_file(FIXTURE / "rollout.safetensors")
    size = policy.cfg.image_size
    policy.reset()
    out = []
    for t in range(r["action"].shape[0]):
        obs = {}
        for name, key in keys.items():
            x = r[name][t]
            if key.endswith("_image"):
                x = area_resize(x.permute(2, 0, 1).float()[None] / 255, size)[0]
            obs[key] = x.numpy()
        out.append(policy.select_action(obs))
    return np.stack(out)


def expected() -> np.ndarray:
    """The plugin's actions through LeRobot's loop, clipped to the action space as ours are
    (Meta-World and robosuite clip to [-1, 1] themselves)."""
    return np.clip(load_file(FIXTURE / "rollout.safetensors")["action"].numpy(), -1, 1)


def test_converted_checkpoint_acts_as_the_plugin_did_in_lerobots_loop(tmp_path):
    out = lerobot_to_checkpoint(PRETRAINED, tmp_path / "ckpt", rename=RENAME)
    policy = TTMPolicy.from_pretrained(out)
    assert policy.cfg.obs_keys == ("front_image", "wrist_image", "robot_state")
    assert (policy.cfg.image_size, policy.cfg.dim, policy.cfg.ttm.memory_tokens) == (24, 16, 4)
    got = rollout_actions(
        policy, {"front": "front_image", "wrist": "wrist_image", "state": "robot_state"}
    )
    want = expected()
    assert np.abs(want).max() > 0.05  # the fixture's actions are not trivially zero
    np.testing.assert_allclose(got, want, atol=1e-5)
    # The memory matters to these actions: the same frames from an empty memory at each step
    # give other actions after the first step.
    again = TTMPolicy.from_pretrained(out)
    r = load_file(FIXTURE / "rollout.safetensors")
    t = r["action"].shape[0] - 1
    again.reset()
    obs = {
        "front_image": area_resize(r["front"][t].permute(2, 0, 1).float()[None] / 255, 24)[
            0
        ].numpy(),
        "wrist_image": area_resize(r["wrist"][t].permute(2, 0, 1).float()[None] / 255, 24)[
            0
        ].numpy(),
        "robot_state": r["state"][t].numpy(),
    }
    assert np.abs(again.select_action(obs) - want[t]).max() > 1e-4


def test_without_rename_the_keys_are_the_plugins(tmp_path):
    policy = TTMPolicy.from_pretrained(lerobot_to_checkpoint(PRETRAINED, tmp_path / "ckpt"))
    keys = ("observation_images_front_image", "observation_images_wrist_image", "observation_state")
    assert policy.cfg.obs_keys == keys
    got = rollout_actions(policy, dict(zip(("front", "wrist", "state"), keys)))
    np.testing.assert_allclose(got, expected(), atol=1e-5)


def test_cli_converts_and_records_the_datasets_env(tmp_path):
    from tests.conftest import ROBOMIMIC_FIXTURE

    out = tmp_path / "ckpt"
    args = ["--path", str(PRETRAINED), "--out", str(out), "--dataset", str(ROBOMIMIC_FIXTURE)]
    args += ["--rename", *(f"{k}={v}" for k, v in RENAME.items())]
    convert = [sys.executable, "-m", "envs.lerobot_convert", "lerobot-policy"]
    p = subprocess.run(convert + args, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["obs_keys"] == list(RENAME.values()) and summary["env_args"]
    env_args = json.loads((out / ENV_ARGS_NAME).read_text())
    assert env_args["env_name"] == "Lift"  # the dataset's, for ttm-eval
    # An existing output is kept unless --overwrite.
    p = subprocess.run(convert + args, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "--overwrite" in p.stderr
    p = subprocess.run(
        convert + args + ["--overwrite"], capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr


def test_bad_checkpoints_fail_clearly(tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(PRETRAINED, bad)
    with pytest.raises(CheckpointError, match="not input features"):
        lerobot_to_checkpoint(bad, tmp_path / "o1", rename={"observation.image": "x_image"})
    with pytest.raises(CheckpointError, match="must end in `_image`"):
        lerobot_to_checkpoint(bad, tmp_path / "o2", rename={"observation.state": "state_image"})
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "type": "act"}))
    with pytest.raises(CheckpointError, match="`ttm` policy type"):
        lerobot_to_checkpoint(bad, tmp_path / "o3")
    (bad / "config.json").write_text(json.dumps(cfg))
    pre = json.loads((bad / "policy_preprocessor.json").read_text())
    pre["steps"][-1]["config"]["norm_map"]["STATE"] = "MEAN_STD"
    (bad / "policy_preprocessor.json").write_text(json.dumps(pre))
    with pytest.raises(CheckpointError, match="MEAN_STD"):
        lerobot_to_checkpoint(bad, tmp_path / "o4")
    shutil.copy(PRETRAINED / "policy_preprocessor.json", bad / "policy_preprocessor.json")
    weights = load_file(bad / "model.safetensors")
    from safetensors.torch import save_file

    save_file({k: v for k, v in weights.items() if "head" not in k}, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        lerobot_to_checkpoint(bad, tmp_path / "o5")
    (bad / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(Exception, match="model.safetensors|header|deserializ"):
        lerobot_to_checkpoint(bad, tmp_path / "o6")
