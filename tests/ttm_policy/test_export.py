"""ttm-export: every temporal core exports to ONNX, and ONNX Runtime streams a real PointCue
episode (200 steps) with the actions and the state of PyTorch's `policy.step` within 1e-4.
Plus the spec's contents, the CLI, and refusals (TorchScript included: it is pickle-based)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.ttm_policy.export_helpers import (
    CORES,
    KEYS,
    SIZE,
    STEPS,
    export_tiny,
    record_point_cue,
    stats_from,
    tiny_policy,
)
from ttm_policy import TTMPolicy
from ttm_policy.export import SPEC_NAME, ExportError, export, main, sha256
from ttm_policy.runtime import OnnxPolicy

TOL = 1e-4


@pytest.fixture(scope="module")
def episode():
    return record_point_cue()


@pytest.fixture(scope="module")
def stats(episode):
    return stats_from(*episode)


def _as_tuple(state):
    return (state,) if isinstance(state, torch.Tensor) else tuple(state)


@pytest.mark.parametrize("core", [*CORES, "ttm+binary-gripper"])
def test_onnx_matches_pytorch_over_a_real_episode(core, episode, stats, tmp_path):
    observations, _ = episode
    core, _, option = core.partition("+")
    policy = tiny_policy(core, stats, **({"binary_gripper": True} if option else {}))
    runtime = OnnxPolicy(export_tiny(tmp_path, policy, core))
    names = [s["name"] for s in runtime.spec["state"]]
    with torch.no_grad():
        state_ref = policy.init_state(1)
    state = runtime.initial_state(1)
    kept = [r for r in _as_tuple(state_ref) if r.numel()]  # zero-sized state is not in the graph
    assert len(kept) == len(names)
    for name, r in zip(names, kept):  # initial values, the learned TTM memory included
        np.testing.assert_array_equal(state[name], r.numpy())
    worst_action = worst_state = 0.0
    with torch.no_grad():
        for obs in observations:
            x = {k: torch.from_numpy(np.asarray(obs[k]))[None] for k in KEYS}
            x["robot0_eef_pos"] = x["robot0_eef_pos"].float()
            chunk_ref, state_ref = policy.step(x, state_ref)
            feed, problems = runtime.check_observation(obs)
            assert not problems
            chunk, state = runtime.step(feed, state)
            worst_action = max(worst_action, np.abs(chunk - chunk_ref.numpy()).max())
            ref = _as_tuple(state_ref)
            kept = [r for r in ref if r.numel()]  # zero-sized state is not in the graph
            assert len(kept) == len(names)
            for name, r in zip(names, kept):
                assert state[name].dtype == r.numpy().dtype, name
                d = np.abs(state[name].astype(np.float64) - r.numpy().astype(np.float64)).max()
                worst_state = max(worst_state, d)
    print(
        f"\n{core}: {STEPS} steps, max |ONNX - PyTorch| action {worst_action:.2e}, "
        f"state {worst_state:.2e}"
    )
    assert worst_action < TOL and worst_state < TOL


def test_spec_says_what_a_controller_needs(stats, tmp_path):
    policy = tiny_policy("transformer", stats, action_horizon=3)
    out = export_tiny(tmp_path, policy, "tf")
    spec = json.loads((out / SPEC_NAME).read_text())
    assert spec["temporal_core"] == "transformer"
    assert spec["control_hz"] == 20.0
    assert spec["package_version"] == "0.1.0"
    assert spec["observations"] == [
        {
            "name": "agentview_image",
            "kind": "image",
            "shape": [SIZE, SIZE, 3],
            "dtype": "uint8",
            "crop": 28,
        },
        {"name": "robot0_eef_pos", "kind": "lowdim", "shape": [3], "dtype": "float32"},
    ]
    a = spec["action"]
    assert (a["dim"], a["horizon"], a["low"], a["high"]) == (7, 3, [-1.0] * 7, [1.0] * 7)
    window_cache = 3 * policy.cfg.num_tokens  # (window - 1) * N
    assert [(s["name"], s["shape"], s["dtype"]) for s in spec["state"]] == [
        ("kv_keys", [1, 4, window_cache, 8], "float32"),
        ("kv_values", [1, 4, window_cache, 8], "float32"),
        ("kv_valid", [window_cache], "bool"),
        ("kv_pos", [], "int64"),
    ]
    assert spec["checkpoint"]["weights_sha256"] == sha256(
        tmp_path / "ckpt-tf" / "model.safetensors"
    )
    assert set(spec["files_sha256"]) == {"policy.onnx", *(s["init_file"] for s in spec["state"])}
    assert all(sha256(out / f) == h for f, h in spec["files_sha256"].items())
    assert spec["export_check"]["batch"] == "dynamic"
    assert spec["export_check"]["max_abs_diff"]["action"] < TOL


@pytest.mark.parametrize("core", ["ttm-memoryless", "none"])
def test_zero_sized_state_is_left_out(core, stats, tmp_path):
    spec = json.loads(
        (export_tiny(tmp_path, tiny_policy(core, stats), core) / SPEC_NAME).read_text()
    )
    kept = [s["name"] for s in spec["state"]]
    omitted = [(s["name"], 0 in s["shape"]) for s in spec["omitted_state"]]
    if core == "none":
        assert kept == ["kv_pos"]
        assert omitted == [("kv_keys", True), ("kv_values", True), ("kv_valid", True)]
    else:
        assert kept == [] and omitted == [("memory", True)]


def test_cli(stats, tmp_path, capsys):
    policy = tiny_policy("ttm", stats, head="gmm")
    policy.save_pretrained(tmp_path / "ckpt")
    main(
        [
            "--checkpoint",
            str(tmp_path / "ckpt"),
            "--out",
            str(tmp_path / "onnx"),
            "--control-hz",
            "10",
        ]
    )
    assert "export check" in capsys.readouterr().out
    assert json.loads((tmp_path / "onnx" / SPEC_NAME).read_text())["control_hz"] == 10.0

    with pytest.raises(ExportError, match="choose one of"):  # no pickle-based TorchScript
        export(tmp_path / "ckpt", tmp_path / "ts", "torchscript")


def test_refusals(stats, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert e.value.code == 2 and "nope" in capsys.readouterr().err
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    tiny_policy("lstm", stats).save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ExportError, match="not an export directory"):
        export(tmp_path / "ckpt", tmp_path / "precious")
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"
    tiny_policy("lstm", stats, sample_actions=True, head="gmm").save_pretrained(tmp_path / "s")
    with pytest.raises(ExportError, match="sample_actions"):
        export(tmp_path / "s", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    policy = tiny_policy("transformer", stats)
    cfg = replace(policy.cfg, transformer=replace(policy.cfg.transformer, window=None))
    TTMPolicy(cfg, stats).save_pretrained(tmp_path / "w")
    with pytest.raises(ExportError, match="window=None"):
        export(tmp_path / "w", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_diverged_checkpoints_are_refused(stats, tmp_path, capsys):
    """NaN weights, or finite weights whose outputs overflow: no export is written (the
    parity check alone would pass them: max(0.0, nan) == 0.0)."""
    policy = tiny_policy("ttm", stats)
    with torch.no_grad():
        next(policy.head.parameters()).fill_(float("nan"))
    policy.save_pretrained(tmp_path / "nan")
    with pytest.raises(SystemExit) as e:
        main(["--checkpoint", str(tmp_path / "nan"), "--out", str(tmp_path / "out")])
    assert e.value.code == 2 and "non-finite values" in capsys.readouterr().err
    policy = tiny_policy("ttm", stats)
    with torch.no_grad():
        for p in policy.head.parameters():
            p.fill_(3e38)  # finite, but the head's sums overflow to inf, then inf - inf = nan
    policy.save_pretrained(tmp_path / "huge")
    with pytest.raises(ExportError, match="non-finite actions or state"):
        export(tmp_path / "huge", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "summariser,gate,bias",
    [
        ("tl-mha", False, 0),
        ("linear", False, 0),
        ("pool", False, 0),
        ("tl", True, 0),
        ("tl", False, 4),
    ],
)
def test_ablation_summarisers_export_with_a_dynamic_batch(
    summariser, gate, bias, episode, stats, tmp_path
):
    """The ablations once traced their batch size as a constant (`tl-mha`, `linear`) or had
    no ONNX form (`pool`): they export like the rest and match PyTorch, as do the gated
    and the copy-biased writes."""
    policy = tiny_policy("ttm", stats)
    N = policy.cfg.num_tokens  # `linear` mixes a fixed number of tokens
    ttm = replace(
        policy.cfg.ttm, summariser=summariser, input_tokens=N, write_gate=gate,
        write_self_bias=float(bias),
    )  # fmt: skip
    policy = TTMPolicy(replace(policy.cfg, ttm=ttm), stats).eval()
    out = export_tiny(tmp_path, policy, f"{summariser}{'-gated' if gate else ''}{bias or ''}")
    spec = json.loads((out / SPEC_NAME).read_text())
    assert spec["export_check"]["batch"] == "dynamic"
    assert spec["export_check"]["batches"] == [1, 3]
    runtime = OnnxPolicy(out)
    policy.reset()
    for obs in episode[0][:20]:
        np.testing.assert_allclose(runtime(obs), policy.select_action(obs), atol=TOL)


def test_a_sampled_binary_gripper_is_drawn_by_the_runtime_from_the_graphs_probability(
    episode, stats, tmp_path
):
    """A binary gripper trained to be sampled (the presets) exports P(close) beside the most
    likely chunk; the runtime draws open/close from it with its seeded generator (both occur
    at P = 0.5, the same seed gives the same draws), the other axes are the most likely
    action's, and sample=False gives the most likely gripper, as torch's policy.step does."""
    observations, _ = episode
    policy = tiny_policy("ttm", stats, binary_gripper=True, sample_actions=True)
    with torch.no_grad():  # the gripper's logit row: 0, so P(close) = 0.5 on every frame
        policy.head.net[-1].weight[-1].zero_()
        policy.head.net[-1].bias[-1] = 0.0
    out = export_tiny(tmp_path, policy, "grip")
    g = json.loads((out / SPEC_NAME).read_text())["action"]["gripper"]
    assert g["column"] == 6 and (g["open"], g["close"]) == (-1.0, 1.0) and g["sample"] is True

    def run(**kw):
        runtime = OnnxPolicy(out, **kw)
        acts = np.stack([runtime(obs) for obs in observations[:40]])
        assert runtime.last_error is None and runtime.fault_count == 0
        return acts

    drawn, again, other = run(seed=0), run(seed=0), run(seed=1)
    likely = run(sample=False)
    assert set(np.unique(drawn[:, 6])) == {-1.0, 1.0}
    assert 8 <= (drawn[:, 6] > 0).sum() <= 32  # 40 draws at P = 0.5
    np.testing.assert_array_equal(drawn, again)
    assert not np.array_equal(drawn[:, 6], other[:, 6])
    np.testing.assert_array_equal(drawn[:, :6], likely[:, :6])
    assert (likely[:, 6] == -1.0).all()  # logit 0 is not > 0: open, as in torch
    with torch.no_grad():
        state, ref = policy.init_state(1), []
        for obs in observations[:40]:
            x = {k: torch.from_numpy(np.asarray(obs[k]))[None] for k in KEYS}
            x["robot0_eef_pos"] = x["robot0_eef_pos"].float()
            chunk, state = policy.step(x, state, sample=False)
            ref.append(chunk[0, 0].numpy())
    np.testing.assert_allclose(likely, np.stack(ref), atol=TOL)
