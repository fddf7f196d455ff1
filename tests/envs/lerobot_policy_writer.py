"""Writes tests/fixtures/lerobot_ttm_policy/: a checkpoint of LeRobot's `ttm` policy type (the
plugin in lerobot_policy_ttm/) saved by LeRobot's own code, and a rollout of it through
LeRobot's own processors, for tests/ttm_policy/test_lerobot_checkpoint.py, which converts the
checkpoint with `ttm-convert lerobot-policy` and checks our policy's actions against the
rollout's, without LeRobot installed. Run it under the LeRobot venv (scripts/lerobot_check.sh):

    ../lerobot_venv/bin/python tests/envs/lerobot_policy_writer.py tests/fixtures/lerobot_ttm_policy

What it does is what lerobot-train and lerobot-eval do with the plugin, at a tiny size:
- `TTMConfig` with LeRobot features (two cameras at 48 px, a 5-D state, a 4-D action) and a
  tiny network (image_size 24, so the plugin's resize runs), `TTMPolicy(config)` from a fixed
  seed, LeRobot's pre/post processors with dataset statistics (`make_ttm_pre_post_processors`),
  saved with `save_pretrained` as lerobot-train saves a checkpoint (pretrained_model/);
- then reloaded from that directory as lerobot-eval loads one (`from_pretrained`,
  `make_pre_post_processors(pretrained_path=...)`), and run for STEPS control steps on smooth
  random frames and states, each step as lerobot-eval's rollout does it (uint8 HWC frames ->
  float CHW / 255, state float32, preprocessor, `select_action`, postprocessor).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.factory import make_pre_post_processors
from lerobot_policy_ttm.configuration_ttm import TTMConfig
from lerobot_policy_ttm.modeling_ttm import TTMPolicy
from lerobot_policy_ttm.processor_ttm import make_ttm_pre_post_processors
from safetensors.torch import save_file

STEPS = 12
SIZE = 48  # the frames LeRobot gives; the policy resizes them to its image_size
CAMERAS = ("observation.images.front", "observation.images.wrist")
STATE_MIN = np.array([-0.5, -0.2, 0.0, -1.0, 0.0], np.float32)
STATE_MAX = np.array([0.5, 0.6, 0.3, 1.0, 0.04], np.float32)
ACTION_MIN = np.array([-1.0, -1.0, -1.0, -1.0], np.float32)
ACTION_MAX = np.array([1.0, 0.5, 1.0, 1.0], np.float32)


def frames(rng: np.random.Generator) -> np.ndarray:
    """(STEPS, SIZE, SIZE, 3) uint8: a bright square drifting over a noisy background."""
    out = rng.integers(40, 90, (STEPS, SIZE, SIZE, 3)).astype(np.uint8)
    y, x = rng.integers(4, SIZE - 16, 2)
    for t in range(STEPS):
        out[t, y + t // 2 : y + t // 2 + 10, x + t : x + t + 10] = (230, 60, 30)
    return out


def main(out: Path) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    features = {c: PolicyFeature(FeatureType.VISUAL, (3, SIZE, SIZE)) for c in CAMERAS}
    features["observation.state"] = PolicyFeature(FeatureType.STATE, (5,))
    config = TTMConfig(
        input_features=features,
        output_features={"action": PolicyFeature(FeatureType.ACTION, (4,))},
        device="cpu",
        push_to_hub=False,
        n_obs_steps=8,
        image_size=24,
        dim=16,
        tokens_per_camera=2,
        memory_tokens=4,
        read_tokens=2,
        layers=1,
        head_hidden=32,
    )
    policy = TTMPolicy(config)
    stats = {
        "observation.state": {
            "min": torch.from_numpy(STATE_MIN),
            "max": torch.from_numpy(STATE_MAX),
        },
        "action": {"min": torch.from_numpy(ACTION_MIN), "max": torch.from_numpy(ACTION_MAX)},
    }
    pre, post = make_ttm_pre_post_processors(config, dataset_stats=stats)
    ckpt = out / "pretrained_model"
    policy.save_pretrained(ckpt)
    pre.save_pretrained(ckpt)
    post.save_pretrained(ckpt)

    # As lerobot-eval: reload, then one episode step by step.
    policy = TTMPolicy.from_pretrained(ckpt)
    policy.eval()
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(ckpt))
    images = {c: frames(rng) for c in CAMERAS}
    state = rng.uniform(STATE_MIN, STATE_MAX, (STEPS, 5)).astype(np.float32)
    actions = []
    policy.reset()
    for t in range(STEPS):
        obs = {
            c: torch.from_numpy(images[c][t : t + 1]).permute(0, 3, 1, 2).float() / 255
            for c in CAMERAS
        }
        obs["observation.state"] = torch.from_numpy(state[t : t + 1])
        with torch.inference_mode():
            action = post(policy.select_action(pre(obs)))
        actions.append(action.numpy()[0])
    rollout = {c.split(".")[-1]: torch.from_numpy(images[c]) for c in CAMERAS}
    rollout["state"] = torch.from_numpy(state)
    rollout["action"] = torch.from_numpy(np.stack(actions).astype(np.float32))
    save_file(rollout, str(out / "rollout.safetensors"))
    print(f"wrote {ckpt} and {out / 'rollout.safetensors'}: actions {rollout['action'].shape}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
