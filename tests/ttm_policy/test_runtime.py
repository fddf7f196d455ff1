"""ttm_policy.runtime: the exported policy in the control loop, without torch.

Its actions follow `TTMPolicy.select_action` (chunk queue and ensembling) over a real PointCue
episode; it runs in a process where importing torch fails; bad files fail at load with the
file named; bad observations and non-finite outputs give the safe action and a flag, never an
exception, and leave the state where it was.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.ttm_policy.export_helpers import (
    SIZE,
    export_tiny,
    record_point_cue,
    stats_from,
    tiny_policy,
)
from ttm_policy.runtime import SPEC_NAME, OnnxPolicy, PolicyLoadError, sha256, spec_digest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def episode():
    return record_point_cue()


@pytest.fixture(scope="module")
def exported(episode, tmp_path_factory):
    """A TTM policy with 3-action chunks run as a queue, and its export."""
    root = tmp_path_factory.mktemp("runtime")
    policy = tiny_policy("ttm", stats_from(*episode), action_horizon=3)
    return policy, export_tiny(root, policy, "ttm")


def _good(obs):
    return {k: np.array(v) for k, v in obs.items()}


@pytest.mark.parametrize("execution", ["queue", "ensemble"])
def test_actions_follow_select_action(execution, episode, tmp_path):
    observations, _ = episode
    core = "ttm" if execution == "queue" else "lstm"
    policy = tiny_policy(core, stats_from(*episode), action_horizon=3, chunk_execution=execution)
    runtime = OnnxPolicy(export_tiny(tmp_path, policy, core))
    policy.reset()
    runtime.reset()
    worst = 0.0
    for obs in observations:
        a_ref = policy.select_action(obs)
        a = runtime(obs)
        assert runtime.last_error is None, runtime.last_error
        assert a.shape == (7,) and a.dtype == np.float32
        worst = max(worst, np.abs(a - a_ref).max())
    assert worst < 1e-4
    state_ref = policy._state if isinstance(policy._state, tuple) else (policy._state,)
    for x, r in zip(runtime.state.values(), state_ref):
        np.testing.assert_allclose(x, r.detach().numpy(), atol=1e-4)
    assert runtime.steps == len(observations) and runtime.fault_count == 0


BLOCK_TORCH = """
import importlib.abc, json, sys
class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is blocked here (import of {name!r})")
sys.meta_path.insert(0, BlockTorch())
try:
    import torch
    sys.exit("torch could be imported")
except ImportError:
    pass
"""

RUN_RUNTIME = """
import numpy as np
from ttm_policy.runtime import OnnxPolicy
export_dir, images, pos = sys.argv[1:4]
images, pos = np.load(images, allow_pickle=False), np.load(pos, allow_pickle=False)
policy = OnnxPolicy(export_dir)
actions = [policy({"agentview_image": i, "robot0_eef_pos": p}).tolist() for i, p in zip(images, pos)]
print(json.dumps({"actions": actions, "faults": policy.fault_count,
                  "torch_modules": sorted(m for m in sys.modules if m.split(".")[0] == "torch")}))
"""

RUN_LOOP = """
import runpy
sys.argv = ["robot_loop.py", *sys.argv[1:]]
runpy.run_path("examples/robot_loop.py", run_name="__main__")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "torch")))
"""


def _without_torch(script: str, *args) -> subprocess.CompletedProcess:
    """Run `script` in a fresh Python where `import torch` raises ImportError."""
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + script, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_runtime_needs_no_torch(exported, episode, tmp_path):
    _, out = exported
    observations = episode[0][:20]
    images = np.stack([o["agentview_image"] for o in observations])
    pos = np.stack([o["robot0_eef_pos"] for o in observations])
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "pos.npy", pos)
    result = _without_torch(RUN_RUNTIME, out, tmp_path / "images.npy", tmp_path / "pos.npy")
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["torch_modules"] == [] and got["faults"] == 0
    runtime = OnnxPolicy(out)
    expected = [runtime(o) for o in observations]
    np.testing.assert_array_equal(np.array(got["actions"], np.float32), np.stack(expected))


def test_robot_loop_example_runs_without_torch(exported):
    result = _without_torch(RUN_LOOP, "--export", exported[1], "--steps", "40", "--hz", "50")
    assert result.returncode == 0, result.stderr[-3000:]
    *_, summary, report, torch_modules = result.stdout.strip().splitlines()
    report = json.loads(report)
    assert "40 ticks at 50 Hz" in summary and json.loads(torch_modules) == []
    assert report["policy_faults"] == 0 and report["steps"] == 40
    assert set(report["policy_latency"]) == {"p50_ms", "p90_ms", "p99_ms", "max_ms"}


# ----------------------------------------------------------------------------- load errors


def _edit_spec(d: Path, edit, seal: bool = True) -> None:
    """Change the spec with `edit(spec)`; re-seal it (as a careless tool would) unless not
    `seal`, so that what the runtime refuses is the content, not the seal."""
    spec = json.loads((d / SPEC_NAME).read_text())
    edit(spec)
    if seal:
        spec["spec_sha256"] = spec_digest(spec)
    (d / SPEC_NAME).write_text(json.dumps(spec))


def _patch_spec(d: Path, **changes) -> None:
    _edit_spec(d, lambda spec: spec.update(changes))


def _patch_action(d: Path, seal: bool = True, **changes) -> None:
    _edit_spec(d, lambda spec: spec["action"].update(changes), seal)


def _rehash(d: Path, name: str) -> None:
    _edit_spec(d, lambda spec: spec["files_sha256"].__setitem__(name, sha256(d / name)))


def _truncate(d: Path, name: str) -> None:
    data = (d / name).read_bytes()
    (d / name).write_bytes(data[: len(data) // 2])


def _other_graph(d: Path, episode, root: Path) -> None:
    other = export_tiny(root, tiny_policy("lstm", stats_from(*episode)), "other")
    shutil.copy(other / "policy.onnx", d / "policy.onnx")
    _rehash(d, "policy.onnx")


def _pickled_init(d: Path) -> None:
    np.save(d / "init_memory.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _rehash(d, "init_memory.npy")


def _wrong_init_shape(d: Path) -> None:
    np.save(d / "init_memory.npy", np.zeros((3, 3), np.float32))
    _rehash(d, "init_memory.npy")


CORRUPTIONS = {
    "no directory": (lambda d, e, r: shutil.rmtree(d), "no such export directory"),
    "no spec": (lambda d, e, r: (d / SPEC_NAME).unlink(), "policy_spec.json: missing"),
    "spec not JSON": (lambda d, e, r: (d / SPEC_NAME).write_text("{oops"), "not valid JSON"),
    "spec version": (lambda d, e, r: _patch_spec(d, format_version=99), "format_version 99"),
    "torchscript spec": (
        lambda d, e, r: _patch_spec(d, model_format="torchscript"),
        "model_format",
    ),
    "no onnx": (lambda d, e, r: (d / "policy.onnx").unlink(), "policy.onnx: missing"),
    "truncated onnx": (
        lambda d, e, r: _truncate(d, "policy.onnx"),
        "policy.onnx: sha256 does not match",
    ),
    "corrupt onnx, hash updated": (
        lambda d, e, r: (_truncate(d, "policy.onnx"), _rehash(d, "policy.onnx")),
        "policy.onnx: onnxruntime cannot load",
    ),
    "another export's onnx": (_other_graph, "policy.onnx: graph inputs"),
    "no init file": (lambda d, e, r: (d / "init_memory.npy").unlink(), "init_memory.npy: missing"),
    "pickled init file": (lambda d, e, r: _pickled_init(d), "init_memory.npy: not a readable"),
    "init of wrong shape": (lambda d, e, r: _wrong_init_shape(d), "init_memory.npy: holds float32"),
    "spec edited, not re-sealed": (
        lambda d, e, r: _patch_action(d, seal=False, high=[0.5] * 7),
        "policy_spec.json: spec_sha256 does not match",
    ),
    "null action bounds": (
        lambda d, e, r: _patch_action(d, low=[None] * 7, high=[None] * 7),
        "action.low",
    ),
    "low above high": (
        lambda d, e, r: _patch_action(d, low=[1.0] * 7, high=[-1.0] * 7),
        "low >= high on axes [0, 1, 2, 3, 4, 5, 6]",
    ),
    "string bounds": (lambda d, e, r: _patch_action(d, high=["1"] * 7), "action.high"),
    "infinite bound": (
        lambda d, e, r: _patch_action(d, seal=False, high=[1.0] * 6 + [float("inf")]),
        "spec_sha256",  # Infinity is not JSON: the seal cannot be made for it
    ),
    "bounds excluding the safe action": (
        lambda d, e, r: _patch_action(d, low=[0.1] * 7, high=[1.0] * 7),
        "exclude 0",
    ),
    "bounds of the wrong length": (lambda d, e, r: _patch_action(d, low=[-1.0] * 3), "action.low"),
    "horizon not an integer": (lambda d, e, r: _patch_action(d, horizon="1"), "action.horizon"),
    "init file outside the export": (
        lambda d, e, r: _edit_spec(d, lambda s: s["state"][0].update(init_file="../x.npy")),
        "init_file '../x.npy'",
    ),
    "image dtype": (
        lambda d, e, r: _edit_spec(d, lambda s: s["observations"][0].update(dtype="float32")),
        "observations[0].dtype",
    ),
    "control rate": (lambda d, e, r: _patch_spec(d, control_hz=0), "control_hz 0"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_bad_files_fail_at_load_naming_the_file(case, exported, episode, tmp_path):
    d = tmp_path / "export"
    shutil.copytree(exported[1], d)
    corrupt, message = CORRUPTIONS[case]
    corrupt(d, episode, tmp_path)
    with pytest.raises(PolicyLoadError, match=re.escape(message)) as e:
        OnnxPolicy(d)
    assert str(d) in str(e.value)


# ----------------------------------------------------------------------------- faults


def test_nan_input_gives_safe_action_and_keeps_state(exported, episode):
    _, out = exported
    observations = episode[0][:6]
    clean, runtime = OnnxPolicy(out), OnnxPolicy(out)
    expected = [clean(o) for o in observations]
    for o in observations[:3]:
        runtime(o)
    state, queue_pos = runtime.state, runtime._queue_pos
    bad = _good(observations[3])
    bad["robot0_eef_pos"][1] = np.nan
    action = runtime(bad)  # must not raise
    np.testing.assert_array_equal(action, np.zeros(7, np.float32))
    assert "robot0_eef_pos" in runtime.last_error and "non-finite" in runtime.last_error
    assert (runtime.fault_count, runtime.consecutive_faults, runtime.steps) == (1, 1, 3)
    for name, x in runtime.state.items():  # the fault advanced nothing
        np.testing.assert_array_equal(x, state[name])
    assert runtime._queue_pos == queue_pos
    got = [runtime(o) for o in observations[3:]]  # continues as if the fault never happened
    np.testing.assert_array_equal(np.stack(got), np.stack(expected[3:]))
    assert runtime.last_error is None and runtime.consecutive_faults == 0
    assert runtime.fault_count == 1


def test_hold_repeats_the_last_good_action(exported, episode):
    runtime = OnnxPolicy(exported[1], safe_action="hold")
    assert not runtime({}).any()  # nothing to hold yet: zeros
    good = runtime(episode[0][0])
    bad = _good(episode[0][1])
    bad["robot0_eef_pos"] = np.full(3, np.inf)
    np.testing.assert_array_equal(runtime(bad), good)
    assert runtime.fault_count == 2


def _replace(key, value):
    return lambda obs: {**obs, key: value}


BAD_OBSERVATIONS = {
    "missing key": (
        lambda obs: {"agentview_image": obs["agentview_image"]},
        "missing 'robot0_eef_pos'",
    ),
    "image shape": (
        _replace("agentview_image", np.zeros((SIZE, SIZE), np.uint8)),
        "'agentview_image': shape",
    ),
    "image dtype": (
        _replace("agentview_image", np.zeros((SIZE, SIZE, 3), np.float32)),
        "'agentview_image': dtype float32",
    ),
    "low-dim shape": (_replace("robot0_eef_pos", np.zeros(4)), "'robot0_eef_pos': shape (4,)"),
    "low-dim dtype": (
        _replace("robot0_eef_pos", np.zeros(3, np.int64)),
        "'robot0_eef_pos': dtype int64",
    ),
    "low-dim text": (_replace("robot0_eef_pos", "0 0 0"), "'robot0_eef_pos': shape ()"),
    "not a dict": (lambda obs: None, "must be a dict"),
    "overflows float32": (
        _replace("robot0_eef_pos", np.full(3, 1e300)),
        "non-finite values at [0, 1, 2]",
    ),
    "huge but finite": (_replace("robot0_eef_pos", np.full(3, 3e38, np.float32)), "non-finite"),
}


@pytest.mark.parametrize("case", list(BAD_OBSERVATIONS))
def test_invalid_observation_gives_safe_action_and_flag(case, exported, episode):
    runtime = OnnxPolicy(exported[1])
    runtime(episode[0][0])
    state = runtime.state
    make, message = BAD_OBSERVATIONS[case]
    action = runtime(make(_good(episode[0][1])))  # must not raise
    np.testing.assert_array_equal(action, np.zeros(7, np.float32))
    assert message in runtime.last_error, runtime.last_error
    assert runtime.fault_count == 1 and runtime.steps == 1
    for name, x in runtime.state.items():
        np.testing.assert_array_equal(x, state[name])
    runtime({**episode[0][1], "extra_key": np.zeros(2)})  # extra keys are ignored
    assert runtime.last_error is None


def test_reset_restores_the_initial_state(exported, episode):
    policy, out = exported
    runtime = OnnxPolicy(out)
    for o in episode[0][:4]:
        runtime(o)
    runtime.reset()
    assert runtime.steps == 0 and runtime._queue_pos == 3
    with torch.no_grad():
        np.testing.assert_array_equal(runtime.state["memory"], policy.init_state(1).numpy())


def test_bench_runtime_latency_smoke(exported, tmp_path):
    from eval.bench import main

    ckpt = exported[1].parent / "ckpt-ttm"
    args = ["runtime-latency", "--checkpoint", str(ckpt), "--steps", "5", "--warmup", "1"]
    main([*args, "--threads", "1", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "runtime_latency.json").read_text())
    r = data["results"]["ckpt-ttm"]
    assert set(r["threads=1"]["tick"]) == {"p50_ms", "p90_ms", "p99_ms", "max_ms"}
    assert r["file_bytes"]["policy.onnx"] > 0 and r["core"] == "ttm"
