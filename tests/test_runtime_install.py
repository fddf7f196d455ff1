"""A robot computer installs the runtime alone: `pip install <repository>` with no extra gives
numpy + onnxruntime and no torch, robosuite or mujoco, and `ttm_policy.runtime.OnnxPolicy`
there runs an export made here with the actions it gives here. Also: the checkpoint and the
export a controller reads are readable by another account (the umask decides, not mkdtemp).

That the runtime's actions follow `TTMPolicy.select_action` is tests/ttm_policy/test_runtime.py's
job; this file compares the installed runtime with the one in this environment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from tests.ttm_policy.export_helpers import KEYS, SIZE, stats_from, tiny_policy
from ttm_policy.checkpoint import atomic_directory
from ttm_policy.export import main as export_main
from ttm_policy.runtime import OnnxPolicy

REPO = Path(__file__).resolve().parents[1]
# What pip needs to build the wheel: the project file, its readme and the packages it lists.
SOURCES = ("pyproject.toml", "README.md", "ttm_policy", "envs", "train", "eval")
HEAVY = {"torch", "robosuite", "mujoco"}
SIZE_BOUND_MB = 400
STEPS = 8
# pip's words when it cannot reach the package index (then the test skips, saying so).
OFFLINE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name "
    r"resolution|Name or service not known|Network is unreachable|ConnectTimeoutError|"
    r"ReadTimeoutError|Max retries exceeded|ProxyError|Connection refused"
)

# Run by the runtime-only venv's python, outside the repository.
RUN_INSTALLED = """
import json, sys
import numpy as np
try:
    import torch
    sys.exit(f"torch could be imported from {torch.__file__}")
except ModuleNotFoundError as e:
    torch_error = f"{type(e).__name__}: {e}"
import ttm_policy.runtime
from ttm_policy.runtime import OnnxPolicy
export_dir, observations = sys.argv[1:3]
obs = np.load(observations, allow_pickle=False)
policy = OnnxPolicy(export_dir)
policy.reset()
steps = len(obs[obs.files[0]])
actions = [policy({k: obs[k][t] for k in obs.files}).tolist() for t in range(steps)]
print(json.dumps({"actions": actions, "faults": policy.fault_count,
                  "last_error": policy.last_error, "torch_error": torch_error,
                  "runtime_file": ttm_policy.runtime.__file__}))
"""


def _observations(n: int = STEPS, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Fixed observations as an env gives them: a uint8 camera and a float64 position."""
    rng = np.random.default_rng(seed)
    return [
        {
            "agentview_image": rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
            "robot0_eef_pos": rng.uniform(-0.2, 0.2, 3),
        }
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """A freshly initialised TTM policy (3-action chunks, learned memory init) saved with
    `save_pretrained` and exported with `ttm-export`, both under umask 022."""
    root = tmp_path_factory.mktemp("install")
    observations = _observations()
    actions = np.random.default_rng(1).uniform(-1, 1, (len(observations), 7))
    policy = tiny_policy("ttm", stats_from(observations, actions), action_horizon=3)
    old = os.umask(0o022)
    try:
        policy.save_pretrained(root / "ckpt")
        export_main(["--checkpoint", str(root / "ckpt"), "--out", str(root / "export")])
    finally:
        os.umask(old)
    return root / "ckpt", root / "export"


def _modes(directory: Path) -> tuple[int, set[int]]:
    return stat.S_IMODE(directory.stat().st_mode), {
        stat.S_IMODE(f.stat().st_mode) for f in directory.iterdir()
    }


def test_checkpoint_and_export_are_readable_by_another_account(exported, tmp_path):
    """Under umask 022 the directories are 0755 and the files 0644 (mkdtemp alone would
    leave the directory 0700); under umask 027 they are 0750 / 0640: the umask decides."""
    for directory in exported:
        assert _modes(directory) == (0o755, {0o644}), directory
        assert len(list(directory.iterdir())) >= 2
    old = os.umask(0o027)
    try:
        with atomic_directory(tmp_path / "private") as tmp:
            (tmp / "a.json").write_text("{}")
    finally:
        os.umask(old)
    assert _modes(tmp_path / "private") == (0o750, {0o640})


def _du_mb(path: Path) -> float:
    """Disk use of a tree in MiB (allocated blocks, as `du` counts them; links not followed)."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total / 2**20


def _run(cmd: list, timeout: float, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw
    )


@pytest.mark.slow
def test_runtime_installs_and_runs_without_torch(exported, tmp_path):
    _, export_dir = exported
    # The repository as pip sees it, copied so that pip's in-tree build writes nothing here.
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    # A clean environment: no PYTHONPATH, no active venv, run from outside the repository.
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }

    t0 = time.perf_counter()
    venv = tmp_path / "robot-venv"
    r = _run([sys.executable, "-m", "venv", venv], 300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    py = venv / "bin" / "python"
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    t_venv = time.perf_counter() - t0

    # The runtime-only way: no extras. numpy and onnxruntime pinned to this environment's
    # releases, so that the two runtimes compared below run the same kernels. pip's cache is
    # used; build isolation stays on (a new venv's setuptools, if any, is older than the 77
    # that pyproject.toml's build-system asks for).
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(f"numpy=={version('numpy')}\nonnxruntime=={version('onnxruntime')}\n")
    t0 = time.perf_counter()
    r = _run(
        [py, "-m", "pip", "install", "--timeout", "60", "--retries", "2"]
        + ["--constraint", constraints, src],
        900,
        env=env,
        cwd=tmp_path,
    )
    t_install = time.perf_counter() - t0
    if r.returncode != 0 and OFFLINE.search(r.stdout + r.stderr):
        pytest.skip(
            f"the package index cannot be reached: {OFFLINE.search(r.stdout + r.stderr)[0]}"
        )
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]

    r = _run([py, "-c", "import torch"], 120, env=env, cwd=tmp_path)
    assert r.returncode != 0 and "ModuleNotFoundError: No module named 'torch'" in r.stderr
    r = _run([py, "-m", "pip", "list", "--format=json"], 120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    installed = {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(r.stdout)}
    assert not HEAVY & set(installed), installed
    assert {"numpy", "onnxruntime", "ttm-policy"} <= set(installed), installed

    observations = _observations()
    np.savez(tmp_path / "obs.npz", **{k: np.stack([o[k] for o in observations]) for k in KEYS})
    r = _run(
        [py, "-c", RUN_INSTALLED, export_dir, tmp_path / "obs.npz"], 300, env=env, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["torch_error"] == "ModuleNotFoundError: No module named 'torch'"
    assert Path(got["runtime_file"]).is_relative_to(venv)  # the installed copy, not the repo's
    assert got["faults"] == 0 and got["last_error"] is None
    robot = np.array(got["actions"], np.float32)

    here = OnnxPolicy(export_dir)
    here.reset()
    expected = np.stack([here(o) for o in observations])
    assert here.fault_count == 0 and robot.shape == expected.shape == (STEPS, 7)
    assert not np.allclose(
        expected, expected[0]
    )  # the actions move: the comparison means something
    np.testing.assert_allclose(robot, expected, rtol=0, atol=1e-6)

    site = Path(
        _run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], 60
        ).stdout.strip()
    )
    robot_mb = _du_mb(site)
    full_mb = _du_mb(Path(sysconfig.get_paths()["purelib"]))
    print(
        f"\nruntime-only install: venv {t_venv:.1f} s, pip install {t_install:.1f} s; "
        f"site-packages {robot_mb:.0f} MiB (this environment's: {full_mb:.0f} MiB); "
        f"installed {sorted(installed)}; max |robot - here| action "
        f"{np.abs(robot - expected).max():.1e} over {STEPS} steps"
    )
    assert robot_mb < SIZE_BOUND_MB
