"""A LeRobot checkpoint of the TTM plugin (`lerobot-train --policy.type=ttm`) as our checkpoint.

    ttm-convert lerobot-policy --path outputs/train/checkpoints/last/pretrained_model \
        --out runs/from_lerobot --rename observation.image=corner2_image \
        observation.state=agent_pos --dataset demos.hdf5

The plugin (`lerobot_policy_ttm`) runs our network (`ttm_policy.network.PolicyNetwork`)
inside LeRobot; its `model.safetensors` holds that network's tensors under `net.*`, and LeRobot
keeps the normalisation statistics beside it, in the pre-processor's normaliser state file.
Nothing else is needed to rebuild the same function as a `TTMPolicy` (config.json +
model.safetensors with the statistics), which `ttm-eval`, `ttm-export` and the runtime load.
Read with json and safetensors only: LeRobot need not be installed where this runs.

What is the same, and what is not:
- The network: the same tensors, the same PolicyConfig (`policy_config`, which the plugin
  itself builds its network from).
- Normalisation: LeRobot's MIN_MAX, 2 (x - min) / (max - min + 1e-8) - 1, is ours up to that
  1e-8 (a dimension constant in the data is where the two differ: LeRobot divides by 1e-8,
  ours centres it). Images are not normalised in either (IDENTITY; the tokenizer scales uint8).
- Images: the plugin area-resizes LeRobot's frames (480 px from its Meta-World env) to its
  `image_size` inside the policy (`area_resize`); our policy takes frames already at that
  size, so the env gives them resized the same way (`ttm/MW-<task>-v0` with `view="lerobot"`,
  envs/metaworld_tasks.py).
- Names: LeRobot's features become our observation keys as the plugin names them
  (observation.image -> observation_image, `obs_key`), or as `rename` says (the keys of the
  env the policy will meet), applied to the config and to the camera tokenizers' tensors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ttm_policy.checkpoint import ENV_ARGS_NAME, CheckpointError
from ttm_policy.config import PolicyConfig
from ttm_policy.jsonfile import read_json
from ttm_policy.ttm import TTMConfig as CoreConfig

PREPROCESSOR = "policy_preprocessor.json"  # LeRobot's saved pre-processor pipeline
LOWDIM_TYPES = ("STATE", "ENV")  # LeRobot FeatureType names of non-image inputs


def obs_key(feature: str, visual: bool) -> str:
    """LeRobot feature name -> our observation key ('.' is not allowed in ours; cameras end
    in `_image`): observation.image -> observation_image, observation.state -> observation_state."""
    key = feature.replace(".", "_")
    return key if not visual or key.endswith("_image") else f"{key}_image"


def area_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """float (..., 3, H, W) in [0, 1] (LeRobot's image layout) -> uint8 (..., size, size, 3)
    (ours), resized by area averaging: the plugin's resize of LeRobot's frames, and the
    `view="lerobot"` Meta-World env's, so both give the network the same pixels."""
    lead = images.shape[:-3]
    x = images.reshape(-1, *images.shape[-3:])  # (n, 3, H, W)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="area")
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).reshape(*lead, size, size, 3)


def policy_config(
    fields: Mapping[str, Any],
    inputs: Mapping[str, tuple[str, tuple[int, ...]]],
    action_dim: int,
) -> PolicyConfig:
    """Our PolicyConfig of the plugin's network. `fields`: the plugin config's architecture
    fields (image_size, crop_fraction, core, dim, tokens_per_camera, memory_tokens,
    read_tokens, layers, head_hidden); `inputs`: LeRobot's input features in their order,
    name -> (FeatureType name, shape)."""
    cams = [obs_key(k, True) for k, (kind, _) in inputs.items() if kind == "VISUAL"]
    low = {obs_key(k, False): int(s[0]) for k, (kind, s) in inputs.items() if kind != "VISUAL"}
    size = int(fields["image_size"])
    crop = max(8, round(size * float(fields["crop_fraction"])))
    return PolicyConfig(
        obs_keys=(*cams, *low),
        image_size=size,
        crop_size=min(crop, size),
        dim=int(fields["dim"]),
        tokens_per_camera=int(fields["tokens_per_camera"]),
        lowdim_dims=low,
        core=str(fields["core"]),
        head_hidden=int(fields["head_hidden"]),
        action_dim=int(action_dim),
        action_horizon=1,
        ttm=CoreConfig(
            memory_tokens=int(fields["memory_tokens"]),
            read_tokens=int(fields["read_tokens"]),
            layers=int(fields["layers"]),
        ),
    )


def _read(path: Path) -> Any:
    return read_json(path, "a LeRobot pretrained_model directory", CheckpointError, CheckpointError)


def _features(cfg: dict, name: str, path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    try:
        return {
            k: (str(v["type"]), tuple(int(n) for n in v["shape"])) for k, v in cfg[name].items()
        }
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: `{name}` is not LeRobot's feature table ({e!r})") from e


def _normaliser_stats(directory: Path) -> dict[str, torch.Tensor]:
    """The pre-processor's normaliser state: LeRobot feature -> 'min'/'max'/... tensors, flat
    as `<feature>.<stat>`. CheckpointError unless it normalises as ours does (MIN_MAX for
    low-dim inputs and actions, images as they are: the plugin's own mapping)."""
    pipeline = _read(directory / PREPROCESSOR)
    steps = [
        s
        for s in (pipeline.get("steps", []) if isinstance(pipeline, dict) else [])
        if "normalizer" in str(s.get("registry_name", "")) and s.get("state_file")
    ]
    if len(steps) != 1:
        raise CheckpointError(
            f"{directory / PREPROCESSOR}: expected one normaliser step with a state file, "
            f"found {len(steps)}"
        )
    norm_map = steps[0].get("config", {}).get("norm_map", {})
    wanted = {"VISUAL": "IDENTITY", "STATE": "MIN_MAX", "ENV": "MIN_MAX", "ACTION": "MIN_MAX"}
    other = {k: v for k, v in norm_map.items() if k in wanted and v != wanted[k]}
    if other:
        raise CheckpointError(
            f"{directory / PREPROCESSOR}: normalisation {other}; ours is {wanted} (the plugin's "
            "default normalization_mapping)"
        )
    return load_file(directory / steps[0]["state_file"])


def lerobot_to_checkpoint(
    path: str | Path,
    out: str | Path,
    *,
    rename: Mapping[str, str] | None = None,
    env_args: dict[str, Any] | None = None,
) -> Path:
    """Convert the LeRobot `pretrained_model` directory at `path` (config.json of type `ttm`,
    model.safetensors, the pre-processor files) into our checkpoint at `out`; `rename` maps a
    LeRobot feature to the observation key our env gives; `env_args` (the demonstrations' env,
    robomimic layout) is written beside it for ttm-eval. Returns `out`."""
    from ttm_policy.policy import TTMPolicy

    path, rename = Path(path), dict(rename or {})
    cfg = _read(path / "config.json")
    if not isinstance(cfg, dict) or cfg.get("type") != "ttm":
        raise CheckpointError(
            f"{path / 'config.json'}: not a checkpoint of LeRobot's `ttm` policy type "
            f"(type {cfg.get('type') if isinstance(cfg, dict) else None!r})"
        )
    inputs = _features(cfg, "input_features", path)
    outputs = _features(cfg, "output_features", path)
    if "action" not in outputs or len(outputs["action"][1]) != 1:
        raise CheckpointError(f"{path / 'config.json'}: no 1-D `action` output feature")
    unknown = sorted(set(rename) - set(inputs))
    if unknown:
        raise CheckpointError(f"rename: {unknown} not input features of {path} ({sorted(inputs)})")
    try:
        plugin_cfg = policy_config(cfg, inputs, outputs["action"][1][0])
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path / 'config.json'}: {e}") from e

    # Our keys: the plugin's, or the renamed ones.
    key = {
        f: rename.get(f, obs_key(f, kind == "VISUAL")) for f, (kind, _) in inputs.items()
    }  # LeRobot feature -> our obs key
    for f, (kind, _) in inputs.items():
        if (kind == "VISUAL") != key[f].endswith("_image"):
            raise CheckpointError(
                f"rename {f}={key[f]}: a camera's key must end in `_image`, a low-dim key must not"
            )
    plugin_key = {obs_key(f, kind == "VISUAL"): key[f] for f, (kind, _) in inputs.items()}
    cfg_ours = replace(
        plugin_cfg,
        obs_keys=tuple(plugin_key[k] for k in plugin_cfg.obs_keys),
        lowdim_dims={plugin_key[k]: w for k, w in plugin_cfg.lowdim_dims.items()},
    )

    stats_lr = _normaliser_stats(path)
    stats: dict[str, Any] = {}
    for f, (kind, _) in inputs.items():
        if kind != "VISUAL":
            for s in ("min", "max"):
                if f"{f}.{s}" not in stats_lr:
                    raise CheckpointError(f"{path}: the normaliser has no {f}.{s}")
                stats[f"obs/{key[f]}/{s}"] = stats_lr[f"{f}.{s}"].float()
    for s in ("min", "max"):
        if f"action.{s}" not in stats_lr:
            raise CheckpointError(f"{path}: the normaliser has no action.{s}")
        stats[f"action/{s}"] = stats_lr[f"action.{s}"].float()

    weights = load_file(path / "model.safetensors")
    net: dict[str, torch.Tensor] = {}
    for name, t in weights.items():
        if not name.startswith("net."):
            raise CheckpointError(f"{path / 'model.safetensors'}: unexpected tensor {name!r}")
        name = name[len("net.") :]
        for old, new in plugin_key.items():
            if name.startswith(f"cameras.{old}."):
                name = f"cameras.{new}." + name[len(f"cameras.{old}.") :]
        net[name] = t
    policy = TTMPolicy(cfg_ours, stats)
    try:
        policy.net.load_state_dict(net, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path / 'model.safetensors'}: {e}") from e
    out = policy.save_pretrained(out)
    if env_args is not None:
        (Path(out) / ENV_ARGS_NAME).write_text(json.dumps(env_args, indent=2))
    return Path(out)
