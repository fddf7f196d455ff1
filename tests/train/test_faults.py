"""What a kill -9, a damaged checkpoint, a changed command line or a diverged run leaves
behind: always a complete `last`, a resume from the newest checkpoint that verifies, a
history that survives, finite weights, and files other accounts can read."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from envs.collect import Args, collect
from tests.train.test_train import ROOT, tiny
from train.train import TrainConfig, main, train
from ttm_policy.checkpoint import atomic_directory


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "pointcue.hdf5"
    collect(Args(task="PointCue", out=out, episodes=6, seed=0, valid_fraction=0.2))
    return out


def config(demos: Path, out: Path, **kw) -> TrainConfig:
    base = dict(dataset=demos, out=out, steps=10, batch_size=2, threads=1)
    base |= dict(save_every=5, log_every=1, valid_every=0)
    return tiny(TrainConfig(**{**base, **kw}))


def cli(demos: Path, out: Path, *extra) -> list[str]:
    tiny_flags = ["--model.dim", "32", "--model.ttm.layers", "1", "--model.ttm.memory-tokens"]
    tiny_flags += ["8", "--model.ttm.mlp-dim", "64", "--model.conv-channels", "8", "16", "16"]
    tiny_flags += ["32", "--model.head-hidden", "64", "--threads", "1"]  # the default core: ttm
    args = ["--dataset", demos, "--out", out, "--batch-size", 2]
    args += ["--save-every", 5, "--log-every", 1, "--valid-every", 0, *tiny_flags, *extra]
    return [str(a) for a in args]


def strict_rows(path: Path) -> list[dict]:
    """metrics.jsonl as strict JSON: a bare NaN or Infinity fails here."""

    def refuse(token):
        raise AssertionError(f"{path}: {token} in the metrics")

    return [json.loads(x, parse_constant=refuse) for x in path.read_text().splitlines()]


# ----------------------------------------------------------------------------- atomic writes

KILLED_WRITER = """
import os, shutil, signal, sys
from pathlib import Path
import ttm_policy.checkpoint as ck

target, moment = Path(sys.argv[1]), sys.argv[2]
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
if moment == "after the swap":  # the new directory is in place, the old one not yet deleted
    ck.shutil.rmtree = die
with ck.atomic_directory(target) as tmp:
    (tmp / "a.txt").write_text("new")
    (tmp / "b.txt").write_text("new")
    if moment == "while writing":
        die()
"""


@pytest.mark.parametrize("moment", ["while writing", "after the swap"])
def test_kill_9_never_leaves_a_moment_without_the_directory(moment, tmp_path):
    target = tmp_path / "last"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("old")
        (tmp / "b.txt").write_text("old")
    r = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target), moment], cwd=ROOT)
    assert r.returncode == -9
    contents = {f.name: f.read_text() for f in target.iterdir()}
    want = "new" if moment == "after the swap" else "old"
    assert contents == {"a.txt": want, "b.txt": want}  # complete: all old or all new
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.tmp-")
    with atomic_directory(target) as tmp:  # the next write of that name cleans up
        (tmp / "a.txt").write_text("newer")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_files_and_directories_follow_the_umask(demos, tmp_path):
    old = os.umask(0o022)
    try:
        train(config(demos, tmp_path / "run", steps=5))
    finally:
        os.umask(old)
    last = tmp_path / "run" / "checkpoints" / "last"
    assert stat.S_IMODE(last.stat().st_mode) == 0o755
    assert {stat.S_IMODE(f.stat().st_mode) for f in last.iterdir()} == {0o644}


# ----------------------------------------------------------------------------- resume


def test_resume_skips_damaged_checkpoints_and_cleans_leftovers(demos, tmp_path, capsys):
    out = tmp_path / "run"
    train(config(demos, out, steps=15))
    root = out / "checkpoints"
    (root / ".5.old-999999999-x").mkdir()  # left by a writer killed long ago (no such pid)
    weights = root / "15" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (root / "10" / "trainer_state.json").write_text("")  # damaged too
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"step": 16, "losses/to')  # a torn last line
    summary = train(config(demos, out, steps=20, resume=True))
    err = capsys.readouterr().err
    assert f"skipping {root / '15'}" in err and f"skipping {root / '10'}" in err
    assert summary["resumed_from"] == 5 and summary["steps"] == 20
    assert [r["step"] for r in strict_rows(out / "metrics.jsonl")] == list(range(1, 21))
    assert not (root / ".5.old-999999999-x").exists()


def test_resume_skips_a_checkpoint_whose_lane_memory_is_damaged(demos, tmp_path, capsys):
    """--chunk: the lanes' memory is part of the checkpoint; a torn stream.safetensors makes
    the checkpoint unreadable like a torn weights file, and the resume takes an older one."""
    out = tmp_path / "run"
    train(config(demos, out, steps=10, chunk=8))
    root = out / "checkpoints"
    for name in ("10", "last"):
        lanes = root / name / "stream.safetensors"
        lanes.write_bytes(lanes.read_bytes()[:40])
    summary = train(config(demos, out, steps=12, chunk=8, resume=True))
    err = capsys.readouterr().err
    assert f"skipping {root / '10'}: SafetensorError" in err
    assert summary["resumed_from"] == 5 and summary["steps"] == 12


def test_the_training_clock_continues_across_a_resume(demos, tmp_path):
    """`charts/train_s` (the learning curves' clock) resumes from the checkpoint's value."""
    out = tmp_path / "run"
    assert main(cli(demos, out, "--steps", 5)) is None
    saved = json.loads((out / "checkpoints" / "5" / "trainer_state.json").read_text())["train_s"]
    assert main(cli(demos, out, "--steps", 10, "--resume")) is None
    rows = strict_rows(out / "metrics.jsonl")
    clock = [r["charts/train_s"] for r in rows]
    assert saved > 0 and clock[4] == saved  # step 5, logged before the resume
    assert all(a < b for a, b in zip(clock, clock[1:])) and clock[5] > saved


def test_resume_from_last_alone_and_from_nothing(demos, tmp_path, capsys):
    out = tmp_path / "run"
    train(config(demos, out, steps=5, save_every=5))
    os.rename(out / "checkpoints" / "5", tmp_path / "moved")  # only `last` is left
    assert train(config(demos, out, steps=10, resume=True))["resumed_from"] == 5
    fresh = train(config(demos, tmp_path / "new", steps=5, resume=True))
    assert fresh["resumed_from"] == 0 and fresh["steps"] == 5
    assert "no checkpoint under" in capsys.readouterr().err


def test_resume_refuses_another_model_or_data_and_records_other_changes(demos, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(cli(demos, out, "--steps", 5)) is None
    with pytest.raises(SystemExit) as e:
        main(cli(demos, out, "--steps", 10, "--resume", "--model.dim", "48"))
    err = capsys.readouterr().err
    assert e.value.code == 2 and "model differs" in err and "dim: 32 there, 48 now" in err
    with pytest.raises(SystemExit) as e:
        main(cli(demos, out, "--steps", 10, "--resume", "--seed", "3"))
    assert e.value.code == 2 and "--seed differ" in capsys.readouterr().err
    main(cli(demos, out, "--steps", 10, "--resume", "--lr", "1e-4"))
    assert "lr 0.002 -> 0.0001" in capsys.readouterr().err
    record = json.loads((out / "resumes.jsonl").read_text())
    assert record["step"] == 5 and record["changed"]["lr"] == [0.002, 0.0001]
    before = (out / "summary.json").read_text()
    main(cli(demos, out, "--steps", 10, "--resume", "--lr", "1e-4"))  # already finished
    assert "already finished at step 10" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == before
    assert json.loads(before)["final_loss"] is not None


def test_resume_refuses_a_run_trained_on_windows(demos, tmp_path, capsys):
    """Runs of earlier versions trained on windows with a memory reset that inference never
    makes; continuing one would mix the two. The resume says so."""
    out = tmp_path / "run"
    assert main(cli(demos, out, "--steps", 5)) is None
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "mode": "window", "window": 10}))
    with pytest.raises(SystemExit) as e:
        main(cli(demos, out, "--steps", 10, "--resume"))
    err = capsys.readouterr().err
    assert e.value.code == 2 and "10-step windows" in err and "another --out" in err


# ----------------------------------------------------------------------------- divergence


def test_a_diverged_run_stops_and_keeps_the_last_good_checkpoint(demos, tmp_path, capsys):
    out = tmp_path / "run"
    main(cli(demos, out, "--steps", 5))
    good = load_file(out / "checkpoints" / "5" / "model.safetensors")
    with pytest.raises(SystemExit) as e:
        main(cli(demos, out, "--steps", 30, "--resume", "--lr", "1e12", "--grad-clip", "0"))
    err = capsys.readouterr().err
    assert e.value.code == 1 and "diverged" in err and str(out / "checkpoints" / "5") in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["5", "last"]
    for k, v in load_file(out / "checkpoints" / "last" / "model.safetensors").items():
        torch.testing.assert_close(v, good[k], rtol=0, atol=0)
    strict_rows(out / "metrics.jsonl")  # no bare NaN in the history


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a CPU-only machine")
def test_cuda_device_without_cuda_is_one_line(demos, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(cli(demos, tmp_path / "run", "--steps", 1, "--device", "cuda"))
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--device cuda" in err and "--device cpu" in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rng_state_is_saved_and_restored(demos, tmp_path):
    out = tmp_path / "run"
    train(config(demos, out, steps=5, device="cuda"))
    rng = load_file(out / "checkpoints" / "5" / "rng.safetensors")
    assert "cuda.0" in rng and "torch.0" in rng
    torch.cuda.manual_seed(123)  # whatever the process did since, the resume restores it
    train(config(demos, out, steps=6, device="cuda", resume=True))
    full = tmp_path / "full"
    train(config(demos, full, steps=6, device="cuda"))
    a = load_file(out / "checkpoints" / "last" / "model.safetensors")
    b = load_file(full / "checkpoints" / "last" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-3, msg=k)  # GPU kernels vary
