"""ttm-train end to end on real PointCue demonstrations: smoke runs, kill -9 + resume,
DDP under torchrun matching one process, and the command-line errors."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import envs
from envs.collect import Args, collect
from train.train import TrainConfig, make_ema, train
from ttm_policy import PolicyConfig, TTMConfig, TTMPolicy

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--model.dim",
    "32",
    "--model.ttm.layers",
    "1",
    "--model.ttm.memory-tokens",
    "8",
    "--model.ttm.mlp-dim",
    "64",
    "--model.conv-channels",
    "8",
    "16",
    "16",
    "32",
    "--model.head-hidden",
    "64",
    "--threads",
    "1",
]


def tiny(cfg: TrainConfig) -> TrainConfig:
    """The in-process twin of TINY: a model small enough for seconds of CPU."""
    cfg.model.dim, cfg.model.ttm.layers, cfg.model.ttm.memory_tokens = 32, 1, 8
    cfg.model.ttm.mlp_dim, cfg.model.head_hidden = 64, 64
    cfg.model.conv_channels = (8, 16, 16, 32)
    cfg.model.lstm.hidden, cfg.model.transformer.layers = 32, 1
    return cfg


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "pointcue.hdf5"
    collect(Args(task="PointCue", out=out, episodes=6, seed=0, valid_fraction=0.2))
    return out


def run_cli(*args, env=None, torchrun=False, **kw):
    cmd = [sys.executable, "-m", "train.train", *map(str, args)]
    if torchrun:
        with socket.socket() as sock:  # a free port for the rendezvous
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            str(port),
            "-m",
            "train.train",
            *map(str, args),
        ]
    return subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        **kw,
    )


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "last" / "model.safetensors")


@pytest.mark.parametrize("policy", ["ttm", "ttm-memoryless", "lstm", "transformer", "none"])
def test_smoke_each_core_trains_saves_and_acts_in_the_env(demos, tmp_path, policy):
    cfg = TrainConfig(
        dataset=demos,
        out=tmp_path / "run",
        policy=policy,
        steps=4,
        batch_size=2,
        save_every=2,
        log_every=1,
        valid_every=2,
        valid_batches=1,
        threads=1,
    )
    summary = train(tiny(cfg))
    assert summary["steps"] == 4
    lines = [json.loads(x) for x in (cfg.out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4]
    train_s = [x["charts/train_s"] for x in lines]  # the learning-curve clock
    assert all(0 < a < b for a, b in zip(train_s, train_s[1:])), train_s
    assert all(np.isfinite(x["losses/total"]) for x in lines) and "valid/loss" in lines[1]
    assert json.loads((cfg.out / "config.json").read_text())["model"]["core"] == policy
    assert sorted(p.name for p in (cfg.out / "checkpoints").iterdir()) == ["2", "4", "last"]
    pol = TTMPolicy.from_pretrained(cfg.out / "checkpoints" / "last")
    env = gym.make(envs.task_id("PointCue"))
    obs, _ = env.reset(seed=3)
    pol.reset()
    for _ in range(3):
        a = pol.select_action(obs)
        assert a.shape == (7,) and a.dtype == np.float32 and np.all(np.abs(a) <= 1)
        obs, *_ = env.step(a)


def test_the_action_width_comes_from_the_dataset(demos, tmp_path):
    """A dataset with 4-D actions (Meta-World's xyz delta + gripper) trains a 4-D policy."""
    import h5py

    four = tmp_path / "four.hdf5"
    four.write_bytes(demos.read_bytes())
    with h5py.File(four, "r+") as f:
        for name in f["data"]:
            a = f[f"data/{name}/actions"][()]
            del f[f"data/{name}/actions"]
            f[f"data/{name}/actions"] = a[:, [0, 1, 2, 6]]
    cfg = TrainConfig(dataset=four, out=tmp_path / "run", steps=2, batch_size=2, save_every=2,
                      valid_every=0, threads=1)  # fmt: skip
    train(tiny(cfg))
    pol = TTMPolicy.from_pretrained(cfg.out / "checkpoints" / "last")
    assert pol.cfg.action_dim == 4
    obs, _ = gym.make(envs.task_id("PointCue")).reset(seed=0)
    assert pol.select_action(obs).shape == (4,)


def test_a_gripper_column_becomes_a_sampled_binary_output(demos, tmp_path):
    """The recipe's gripper: where the last action column is an open/close command (both
    signs, every value at least 0.5 from zero: an expert's -1 / +1 with noise), ttm-train
    trains it as a binary output that inference samples; PointCue's last column (always 0)
    stays regressed; `--model.binary-gripper False` keeps a gripper column regressed."""
    import h5py

    from train.data import is_gripper_column

    assert is_gripper_column(np.array([-1.0, -0.93, 0.97, 1.0]))
    assert not is_gripper_column(np.array([-1.0, -0.93, -0.97]))  # one sign only
    assert not is_gripper_column(np.array([-1.0, 0.2, 1.0]))  # a value near 0
    assert not is_gripper_column(np.zeros(5))
    grip = tmp_path / "grip.hdf5"
    grip.write_bytes(demos.read_bytes())
    rng = np.random.default_rng(0)
    with h5py.File(grip, "r+") as f:
        for name in f["data"]:
            a = f[f"data/{name}/actions"]
            col = np.where(np.arange(len(a)) < len(a) // 2, -1.0, 1.0) + rng.normal(0, 0.05, len(a))
            a[:, 6] = np.clip(col, -1, 1)

    def trained(data, name, run=None, **model):
        cfg = TrainConfig(dataset=data, out=tmp_path / name, steps=2, batch_size=2,
                          save_every=2, valid_every=0, threads=1, **(run or {}))  # fmt: skip
        for k, v in model.items():
            setattr(cfg.model, k, v)
        train(tiny(cfg))
        return TTMPolicy.from_pretrained(cfg.out / "checkpoints" / "last").cfg

    on, off, forced = (
        trained(grip, "on"),
        trained(demos, "off"),
        trained(grip, "f", binary_gripper=False),
    )
    assert on.binary_gripper is True and on.sample_actions is True
    assert off.binary_gripper is False and forced.binary_gripper is False
    # Rollouts during training sample the gripper from their own seeded generator: the
    # training's draws (crops) are those of a run without rollouts, so are the weights.
    rollouts = {"eval_every": 1, "eval_episodes": 1, "eval_env_kwargs": '{"max_steps": 20}'}
    trained(grip, "ev", rollouts)
    a = load_file(tmp_path / "on" / "checkpoints" / "last" / "model.safetensors")
    b = load_file(tmp_path / "ev" / "checkpoints" / "last" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_loss_falls(demos, tmp_path):
    cfg = TrainConfig(
        dataset=demos,
        out=tmp_path / "run",
        steps=40,
        batch_size=8,
        warmup=5,
        lr=1e-3,
        log_every=5,
        save_every=40,
        valid_every=0,
        threads=1,
    )
    train(tiny(cfg))
    losses = [
        json.loads(x)["losses/total"] for x in (cfg.out / "metrics.jsonl").read_text().splitlines()
    ]
    assert np.mean(losses[-2:]) < 0.8 * losses[0], losses


def test_pieces_as_long_as_the_episodes_train_exactly_as_whole_episodes(demos, tmp_path, capsys):
    """--chunk at least the longest episode (PointCue's are under 30 steps) gives the very
    batches and weights of whole-episode training (--chunk 0): the default recipe's results on
    short tasks do not depend on it. Shorter pieces of a memory task's episodes are trained,
    with a notice that the gradient no longer spans the episode."""
    runs = {}
    for chunk in (0, 32):
        cfg = TrainConfig(
            dataset=demos, out=tmp_path / str(chunk), chunk=chunk, steps=6, batch_size=4,
            warmup=2, log_every=1, save_every=6, valid_every=0, threads=1,
        )  # fmt: skip
        train(tiny(cfg))
        runs[chunk] = weights(cfg.out)
    for k in runs[0]:
        torch.testing.assert_close(runs[0][k], runs[32][k], atol=0, rtol=0, msg=k)
    assert "cannot teach the memory" not in capsys.readouterr().err
    cut = TrainConfig(dataset=demos, out=tmp_path / "8", chunk=8, steps=6, batch_size=4,
                      warmup=2, save_every=6, valid_every=0, threads=1)  # fmt: skip
    train(tiny(cut))
    err = capsys.readouterr().err
    assert "a memory task (delay_steps=10)" in err and "--chunk 8 pieces" in err, err
    assert any(not torch.equal(runs[0][k], w) for k, w in weights(cut.out).items())
    state = json.loads((cut.out / "checkpoints" / "6" / "trainer_state.json").read_text())
    assert state["stream_memory"] == "Tensor"  # the lanes' TTM memory, for a resume
    saved = load_file(cut.out / "checkpoints" / "6" / "stream.safetensors")
    assert sorted(saved) == ["0.0"] and saved["0.0"].shape == (4, 8, 32)  # (lanes, M, D)


@pytest.mark.slow
def test_kill_9_between_checkpoints_then_resume_matches_an_uninterrupted_run(demos, tmp_path):
    """With 8-step pieces of 24-28-step episodes the checkpoint at step 10 falls inside
    episodes: the resumed run must continue the lanes from their saved memory."""
    common = [
        "--chunk",
        8,
        "--dataset",
        demos,
        "--steps",
        40,
        "--batch-size",
        4,
        "--save-every",
        10,
        "--log-every",
        5,
        "--valid-every",
        0,
        *TINY,
    ]
    full = run_cli(*common, "--out", tmp_path / "full")
    assert full.returncode == 0, full.stderr
    cmd = [
        sys.executable,
        "-m",
        "train.train",
        *map(str, common),
        "--out",
        str(tmp_path / "killed"),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    first = tmp_path / "killed" / "checkpoints" / "10" / "trainer_state.json"
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps = sorted(
        int(p.name) for p in (tmp_path / "killed" / "checkpoints").iterdir() if p.name.isdigit()
    )
    assert steps and steps[-1] < 40, "the run finished before it could be killed"
    resumed = run_cli(*common, "--out", tmp_path / "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = weights(tmp_path / "full"), weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=k)
    logged = [
        json.loads(x)["step"]
        for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    ]
    assert logged == sorted(set(logged)) and logged[-1] == 40  # no duplicated steps after resume


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_match_one_process(demos, tmp_path):
    common = [
        "--dataset",
        demos,
        "--steps",
        6,
        "--batch-size",
        4,
        "--save-every",
        6,
        # Rank 0 alone validates and rolls out at step 3 while rank 1 waits at the barrier
        # after it (neither touches the torch RNG, so the weights still match one process).
        "--valid-every",
        3,
        "--valid-batches",
        1,
        "--log-every",
        3,
        "--eval-every",
        3,
        "--eval-episodes",
        1,
        "--eval-env-kwargs",
        '{"max_steps": 20}',
        "--warmup",
        1,
        "--crop",  # no random crops: the ranks draw theirs from their own RNG streams
        1,
        "--chunk",  # each rank carries its lanes' memory from piece to piece
        8,
        *TINY,
    ]
    ddp = run_cli(*common, "--out", tmp_path / "ddp", torchrun=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    logged = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logged if "rollout/success_rate" in x] == [3, 6]
    assert [x["step"] for x in logged if "valid/loss" in x] == [3, 6]
    single = run_cli(*common, "--out", tmp_path / "single")
    assert single.returncode == 0, single.stderr
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2
    c0, c1 = summary["rank_param_checksums"]
    assert c0 == c1  # replicas identical across ranks
    # Adam divides by sqrt(v): parameters whose gradients are ~1e-9 amplify float-summation
    # differences up to ~1e-5 in 6 steps; a wrong gradient average would differ by ~lr = 2e-3
    # (the episodes differ in length: each rank's loss is weighted by its share of real steps).
    # One exception: the key part of an attention layer's `in_proj_bias` has a gradient of
    # exactly zero in exact arithmetic (it adds q.b_k to every logit of a query, and softmax
    # ignores a shift common to a row), so its gradient is pure float noise, which Adam scales
    # up to steps of about lr in a direction the summation order decides (seen: 1.1e-4 apart).
    a, b = weights(tmp_path / "ddp"), weights(tmp_path / "single")
    for k in a:
        x, y = a[k], b[k]
        if k.endswith("in_proj_bias"):
            d = x.numel() // 3  # [q | k | v]
            x, y = torch.cat([x[:d], x[2 * d :]]), torch.cat([y[:d], y[2 * d :]])
        torch.testing.assert_close(x, y, atol=1e-4, rtol=0, msg=lambda m, k=k: f"{k}: {m}")


def test_ddp_trains_every_core_and_summariser(demos, tmp_path):
    """Two DDP steps (2 gloo ranks) of every core and every TTM summariser, wrapped as
    ttm-train wraps them: a parameter without a gradient makes DDP raise "Expected to have
    finished reduction" at the second step (it did for ttm-memoryless and add-erase)."""
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "ddp.json"
    script = ROOT / "tests" / "train" / "ddp_every_core.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["--master-port", str(port), str(script), str(demos), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(out.read_text())
    from ttm_policy.cores import CORES  # every registered core, a new one included

    assert sorted(results) == sorted(
        list(CORES) + [f"ttm/{s}" for s in ("tl-mha", "add-erase", "linear", "pool")]
    )
    errors = {k: v["error"] for k, v in results.items() if "error" in v}
    assert not errors, f"{sorted(errors)}: {next(iter(errors.values()), '')[:200]}"
    for name, r in results.items():
        c0, c1 = r["checksums"]
        assert c0 == c1, name  # replicas identical after the all-reduced steps


def test_cli_errors(demos, tmp_path):
    r = run_cli("--dataset", tmp_path / "missing.hdf5", "--out", tmp_path / "x", "--steps", 1)
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(
        "--dataset",
        demos,
        "--out",
        tmp_path / "z",
        "--obs-keys",
        "agentview_image",
        "nope_key",
        "--steps",
        1,
    )
    assert r.returncode == 2 and "nope_key" in r.stderr


def test_ema_checkpoint_and_wandb_offline(demos, tmp_path):
    cfg = TrainConfig(
        dataset=demos,
        out=tmp_path / "run",
        steps=3,
        batch_size=2,
        ema=0.9995,  # a realistic decay: 0.5 keeps integer arithmetic exact
        save_every=3,
        log_every=1,
        valid_every=0,
        wandb="offline",
        threads=1,
    )
    train(tiny(cfg))
    last = cfg.out / "checkpoints" / "last"
    ema, raw = load_file(last / "model.safetensors"), load_file(last / "train_model.safetensors")
    assert any(not torch.equal(ema[k], raw[k]) for k in ema if ema[k].is_floating_point())
    TTMPolicy.from_pretrained(last)  # what users load: the EMA weights
    assert list((cfg.out / "wandb").glob("offline-run-*")), "no offline wandb run written"


def test_ema_averages_floats_and_copies_integer_buffers():
    """`token_source` (int64 ids 0..3) must survive many EMA updates at a realistic decay;
    torch's own EMA averages it in float and truncates (3 -> 2)."""
    keys = ("a", "b", "c", "d")
    cfg = PolicyConfig(
        obs_keys=keys,
        lowdim_tokens="per_key",
        dim=32,
        ttm=TTMConfig(layers=1, memory_tokens=4, mlp_dim=32),
    )
    stats = {"action/min": [-1.0] * 7, "action/max": [1.0] * 7}
    for k in keys:
        stats |= {f"obs/{k}/min": [0.0, 0.0], f"obs/{k}/max": [1.0, 1.0]}
    policy = TTMPolicy(cfg, stats)
    assert policy.net.token_source.tolist() == [0, 1, 2, 3]
    decay, p = 0.9995, policy.net.source_embedding
    ema = make_ema(policy, decay)
    expected = None  # the first update copies, the later ones average
    for _ in range(200):
        with torch.no_grad():
            for q in policy.parameters():  # stands in for an optimiser step
                q.add_(torch.randn_like(q) * 1e-2)
        ema.update_parameters(policy)
        now = p.detach().double()
        expected = now.clone() if expected is None else decay * expected + (1 - decay) * now
    assert torch.equal(ema.module.net.token_source, policy.net.token_source)
    torch.testing.assert_close(
        ema.module.net.source_embedding.double(), expected, atol=1e-6, rtol=0
    )
    assert not torch.allclose(ema.module.net.source_embedding, p, atol=1e-3)  # averaged, not copied


def test_rollouts_during_training_keep_a_best_checkpoint(demos, tmp_path):
    cfg = TrainConfig(
        dataset=demos,
        out=tmp_path / "run",
        steps=4,
        batch_size=2,
        save_every=4,
        log_every=4,
        valid_every=0,
        eval_every=2,
        eval_episodes=2,
        eval_video=1,
        eval_env_kwargs='{"max_steps": 20}',
        threads=1,
    )
    train(tiny(cfg))
    lines = [json.loads(x) for x in (cfg.out / "metrics.jsonl").read_text().splitlines()]
    rollouts = [x for x in lines if "rollout/success_rate" in x]
    assert [x["step"] for x in rollouts] == [2, 4]
    best = json.loads((cfg.out / "checkpoints" / "best" / "best.json").read_text())
    # The logged rate is successes / episodes of the per-episode records: `ttm-eval` of the
    # best checkpoint, same seed and env kwargs, replays the rollouts logged at its step, and
    # the best step is the first with the highest logged rate.
    from eval.evaluate import EvalConfig, evaluate

    report = evaluate(
        EvalConfig(
            checkpoint=cfg.out / "checkpoints" / "best",
            episodes=2,
            seed=cfg.seed,
            env_kwargs=cfg.eval_env_kwargs,
            out=tmp_path / "replay",
        )
    )
    records = report["per_episode"]
    logged = next(x for x in rollouts if x["step"] == best["step"])
    assert logged["rollout/success_rate"] == sum(r["success"] for r in records) / len(records)
    assert logged["rollout/mean_length"] == np.mean([r["length"] for r in records])
    assert best["successes"] == sum(r["success"] for r in records)
    assert best["success_rate"] == logged["rollout/success_rate"]
    rates = [x["rollout/success_rate"] for x in rollouts]
    assert best["step"] == rollouts[rates.index(max(rates))]["step"]
    assert best["step"] in (2, 4) and best["episodes_run"] == 2
    TTMPolicy.from_pretrained(cfg.out / "checkpoints" / "best")
    assert (cfg.out / "rollouts" / "2" / "video_0.mp4").stat().st_size > 0

    # The learning curve reads those rollouts against the training clock.
    from eval.curves import plot_curves, time_to

    curve = plot_curves({"ttm": cfg.out}, tmp_path / "curve.png", "PointCue", target=0.0)
    points = curve["runs"]["ttm"]["points"]
    assert [p["step"] for p in points] == [2, 4]
    assert [p["success"] for p in points] == rates
    assert 0 < points[0]["train_s"] < points[1]["train_s"]
    assert curve["runs"]["ttm"]["time_to_target_s"] == points[0]["train_s"]  # 0% reached at once
    assert time_to(points, 1.01) is None
    assert (tmp_path / "curve.png").stat().st_size > 5_000
    assert json.loads((tmp_path / "curve.json").read_text())["runs"]["ttm"]["points"] == points
