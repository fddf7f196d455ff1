"""Policy checkpoints: a directory with `config.json` and `model.safetensors`, nothing else.

    config.json        {"format_version": 1, "class": "TTMPolicy", "policy": <PolicyConfig>}
                       (the full resolved config, low-dim widths included)
    model.safetensors  every parameter and persistent buffer, the normalisation statistics
                       (`normalizer.obs.<key>.min|max`, `normalizer.action.min|max`) included

`TTMPolicy.from_pretrained` rebuilds the policy from these two files alone (no dataset, no
train/), with `load_config`, `load_weights` and `check_weights` here; nothing is pickled. This
module does not import the policy (the policy imports it). Writes are atomic: the files go into a temporary sibling directory that
then takes the target's place, so a reader sees the old checkpoint or the new one, never half
of one, and never none. Replacing an existing directory is one system call on Linux
(renameat2 with RENAME_EXCHANGE swaps the two names; the old one is deleted after); where
that call is missing the old directory is moved aside first, which leaves a moment without
one. Leftovers of writers killed mid-way (`.<name>.tmp-<pid>-*`, `.<name>.old-<pid>-*`) are
deleted by the next write of the same name once their process is gone. Directories and files
get the modes the umask gives (not mkdtemp's 0700), so another account can read an export.
A trainer that adds its own files (optimiser state) to the same directory uses
`atomic_directory` + `write_policy_files` itself.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ttm_policy.config import PolicyConfig
from ttm_policy.jsonfile import read_json

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# What a trainer adds beside them for the evaluators (ttm-eval, ttm-export), read when present:
ENV_ARGS_NAME = "env_args.json"  # the training data's env (robomimic env_args), one task
TASK_ENV_ARGS_NAME = "task_env_args.json"  # a multi-task policy's: {task: env_args}, in order


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and what is wrong."""


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names `a` and `b` in one step (Linux renameat2 RENAME_EXCHANGE); False if
    this system or filesystem cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"renameat2({a}, {b}, RENAME_EXCHANGE): {os.strerror(err)}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_leftovers(parent: Path, name: str | None = None) -> list[Path]:
    """Delete the temporary and old directories in `parent` (of `name`, or of any name) that
    killed writers left behind (their process is gone); returns what was deleted."""
    removed: list[Path] = []
    who = re.escape(name) if name is not None else ".+"
    pattern = re.compile(rf"\.{who}\.(tmp|old)-(\d+)-")
    if not parent.is_dir():
        return removed
    for p in parent.iterdir():
        m = pattern.match(p.name)
        if m and p.is_dir() and not p.is_symlink() and not _pid_alive(int(m.group(2))):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _sibling(directory: Path, kind: str) -> Path:
    return Path(
        tempfile.mkdtemp(prefix=f".{directory.name}.{kind}-{os.getpid()}-", dir=directory.parent)
    )


def remove_directory(directory: str | Path) -> None:
    """Delete `directory` so that it disappears in one rename (a kill during the deletion
    leaves a hidden leftover that `remove_leftovers` deletes, not half a checkpoint)."""
    directory = Path(directory)
    if not directory.exists():
        return
    old = _sibling(directory, "old")
    os.replace(directory, old)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_directory(directory: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory next to `directory`; on a clean exit it takes the
    place of `directory` (see the module docstring); on an error it is removed and
    `directory` is untouched."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(directory.parent, directory.name)
    tmp = _sibling(directory, "tmp")
    try:
        yield tmp
        mask = _umask()
        for f in tmp.iterdir():
            if f.is_file():
                f.chmod(0o666 & ~mask)
                _fsync(f)
        tmp.chmod(0o777 & ~mask)
        _fsync(tmp)
        if directory.exists() and _exchange(tmp, directory):
            _fsync(directory.parent)
            shutil.rmtree(tmp, ignore_errors=True)  # now the old directory
            return
        old = None
        if directory.exists():  # no atomic exchange here: a brief moment without `directory`
            old = _sibling(directory, "old")
            os.replace(directory, old)  # renaming a directory onto an empty one is allowed
        os.replace(tmp, directory)
        _fsync(directory.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_policy_files(policy: nn.Module, directory: str | Path) -> None:
    """Write config.json (`policy.cfg`) and model.safetensors (`policy.state_dict()`) into an
    existing directory (not atomic)."""
    directory = Path(directory)
    doc = {"format_version": FORMAT_VERSION, "class": "TTMPolicy", "policy": policy.cfg.to_dict()}
    (directory / CONFIG_NAME).write_text(json.dumps(doc, indent=2) + "\n")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in policy.state_dict().items()}
    save_file(tensors, directory / WEIGHTS_NAME, metadata={"format_version": str(FORMAT_VERSION)})


def save_pretrained(policy: nn.Module, directory: str | Path) -> Path:
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
    doc = read_json(path, "a checkpoint directory", CheckpointError)
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


def load_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of `directory/model.safetensors` (on the CPU)."""
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; a checkpoint directory holds {WEIGHTS_NAME}")
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def check_weights(path: Path, weights: dict[str, torch.Tensor], expected: dict) -> None:
    """CheckpointError naming the first missing, unexpected or misshapen tensor of `weights`
    against `expected` (a module's state_dict)."""
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
