"""Policy checkpoints: a directory with `config.json` and `model.safetensors`, nothing else.

    config.json        {"format_version": 1, "class": "TTMPolicy", "policy": <PolicyConfig>}
                       (the full resolved config, low-dim widths included)
    model.safetensors  every parameter and persistent buffer, the normalisation statistics
                       (`normalizer.obs.<key>.min|max`, `normalizer.action.min|max`) included

`load_pretrained` rebuilds the policy from these two files alone (no dataset, no train/);
nothing is pickled. Writes are atomic: the files go into a temporary sibling directory that
replaces the target in one rename, so a reader sees the old checkpoint or the new one, never
half of one. A trainer that adds its own files (optimiser state) to the same directory uses
`atomic_directory` + `write_policy_files` itself.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ttm_policy.policy import PolicyConfig, TTMPolicy

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and what is wrong."""


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_directory(directory: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory next to `directory`; on a clean exit it replaces
    `directory` (an existing one is moved aside first, then deleted); on an error it is
    removed and `directory` is untouched."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        yield tmp
        for f in tmp.iterdir():
            if f.is_file():
                _fsync(f)
        _fsync(tmp)
        old = None
        if directory.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
            os.replace(directory, old)  # renaming a directory onto an empty one is allowed
        os.replace(tmp, directory)
        _fsync(directory.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_policy_files(policy: TTMPolicy, directory: str | Path) -> None:
    """Write config.json and model.safetensors into an existing directory (not atomic)."""
    directory = Path(directory)
    doc = {"format_version": FORMAT_VERSION, "class": "TTMPolicy", "policy": policy.cfg.to_dict()}
    (directory / CONFIG_NAME).write_text(json.dumps(doc, indent=2) + "\n")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in policy.state_dict().items()}
    save_file(tensors, directory / WEIGHTS_NAME, metadata={"format_version": str(FORMAT_VERSION)})


def save_pretrained(policy: TTMPolicy, directory: str | Path) -> Path:
    """Atomically write `directory` with config.json and model.safetensors; returns it."""
    with atomic_directory(directory) as tmp:
        write_policy_files(policy, tmp)
    return Path(directory)


def load_config(directory: str | Path) -> PolicyConfig:
    """The PolicyConfig stored in `directory/config.json`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory}: no such checkpoint directory (expected one written by "
            f"save_pretrained, holding {CONFIG_NAME} and {WEIGHTS_NAME})"
        )
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; a checkpoint directory holds {CONFIG_NAME}")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(doc, dict) or "policy" not in doc:
        raise CheckpointError(f"{path}: expected an object with a 'policy' entry")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {version!r}, this code reads {FORMAT_VERSION}"
        )
    try:
        return PolicyConfig.from_dict(doc["policy"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid policy config: {e}") from e


def load_pretrained(directory: str | Path, device: str | torch.device = "cpu") -> TTMPolicy:
    """Rebuild a TTMPolicy (eval mode, on `device`) from config.json + model.safetensors."""
    directory = Path(directory)
    cfg = load_config(directory)
    path = directory / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; a checkpoint directory holds {WEIGHTS_NAME}")
    try:
        weights = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    policy = TTMPolicy(cfg)
    expected = policy.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match {CONFIG_NAME}: "
            + (f"missing {len(missing)} tensors, first {missing[0]!r}; " if missing else "")
            + (f"{len(unexpected)} unexpected, first {unexpected[0]!r}" if unexpected else "")
        )
    for k, v in expected.items():
        if weights[k].shape != v.shape:
            raise CheckpointError(
                f"{path}: tensor {k!r} has shape {tuple(weights[k].shape)}, but {CONFIG_NAME} "
                f"describes {tuple(v.shape)}"
            )
    policy.load_state_dict(weights, strict=True)
    return policy.to(device).eval()
