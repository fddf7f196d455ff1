"""TTMPolicy on real tensors: every core and head trains, checkpoints round-trip, inference
streams, chunks execute, normalisation inverts, bad checkpoints fail clearly.

The demonstrations are a tiny robomimic-format HDF5 written with h5py and read through the
real data layer (train.data); the tests may import train/, the package may not.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tests.ttm_policy.test_ttm_reference import Params, unroll
from train.data import (
    ChunkDataset,
    DataConfig,
    EpisodeStreams,
    compute_stats,
    load_demos,
    make_dataset,
    trim_padding,
)
from ttm_policy import CausalTransformerConfig, GRUConfig, LSTMConfig, TTMConfig
from ttm_policy.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    atomic_directory,
    save_pretrained,
)
from ttm_policy.policy import PolicyConfig, Range, TTMPolicy

KEYS = ("agentview_image", "robot0_eye_in_hand_image", "robot0_eef_pos", "robot0_gripper_qpos")
S = 32  # image side; the policy crops to 28
LENGTHS = (9, 12, 7)
CORES = ["ttm", "ttm-memoryless", "lstm", "transformer", "none", "gru"]


# --------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def demo_path(tmp_path_factory):
    """Three short demos: a bright square moves across both cameras, the actions follow it.
    Action dims 3..5 are constant 0 (zero range: normalisation passes them through), the
    eef z is constant (zero range: centred)."""
    path = tmp_path_factory.mktemp("demos") / "tiny.hdf5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["total"] = sum(LENGTHS)
        data.attrs["env_args"] = json.dumps(
            {"env_name": "Tiny", "env_version": "0", "type": 1, "env_kwargs": {}}
        )
        for i, n in enumerate(LENGTHS):
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = n
            t = np.arange(n)
            phase = rng.uniform(0, 2 * np.pi)
            x = 0.7 * np.sin(phase + 0.5 * t)  # (n,)
            imgs = np.zeros((n, S, S, 3), np.uint8)
            for j in range(n):
                c = int((x[j] + 1) / 2 * (S - 8))
                imgs[j, 4:12, c : c + 8] = (255, 128, 0)
            g.create_dataset("obs/agentview_image", data=imgs)
            g.create_dataset("obs/robot0_eye_in_hand_image", data=imgs[:, ::-1].copy())
            pos = np.stack([x, np.cos(phase + 0.5 * t), np.full(n, 0.8)], axis=1)
            g.create_dataset("obs/robot0_eef_pos", data=pos)  # float64 on disk
            g.create_dataset("obs/robot0_gripper_qpos", data=np.stack([x, -x], 1) * 0.04)
            actions = np.zeros((n, 7))
            actions[:, 0] = 0.9 * np.cos(phase + 0.5 * t)
            actions[:, 1] = 0.5 * x
            actions[:, 2] = np.linspace(-0.5, 0.5, n)
            actions[:, 6] = np.where(x > 0, 1.0, -1.0)
            g.create_dataset("actions", data=actions)
            g.create_dataset("rewards", data=np.zeros(n))
            g.create_dataset("dones", data=(t == n - 1).astype(np.int64))
        f.create_dataset("mask/train", data=np.array([b"demo_0", b"demo_1", b"demo_2"]))
    return path


@pytest.fixture(scope="module")
def demos(demo_path):
    return load_demos(demo_path, KEYS, "train")


@pytest.fixture(scope="module")
def stats(demos):
    return compute_stats(demos)


def make_batch(demo_path, demos, *, horizon: int = 0):
    cfg = DataConfig(path=str(demo_path), obs_keys=KEYS, action_horizon=horizon)
    ds = make_dataset(cfg, demos)
    return next(iter(DataLoader(ds, batch_size=len(ds))))


@pytest.fixture(scope="module")
def batch(demo_path, demos):
    return make_batch(demo_path, demos)  # whole episodes, padded to 12: (3, 12, ...)


def tiny(core: str = "ttm", head: str = "continuous", **kw) -> PolicyConfig:
    """A policy small enough for unit tests: D=32, one layer everywhere, 28 px crops."""
    base = dict(
        obs_keys=KEYS,
        image_size=S,
        crop_size=28,
        dim=32,
        tokens_per_camera=4,
        conv_channels=(8, 16, 16, 32),
        head_hidden=64,
        ttm=TTMConfig(memory_tokens=8, read_tokens=4, layers=1, heads=4, mlp_dim=64),
        lstm=LSTMConfig(hidden=48, layers=1),
        transformer=CausalTransformerConfig(window=3, layers=1, heads=4, mlp_dim=64),
        gru=GRUConfig(hidden=48),
    )
    return PolicyConfig(core=core, head=head, **{**base, **kw})


def episode_obs(demos, e: int = 0) -> list[dict[str, np.ndarray]]:
    """Demo e as the env would give it: one dict per step, low-dim as float64."""
    obs, _ = demos.episode(e)
    n = len(obs[KEYS[0]])
    return [
        {k: (v[t] if v.dtype == np.uint8 else v[t].astype(np.float64)) for k, v in obs.items()}
        for t in range(n)
    ]


def rollout(policy: TTMPolicy, steps: list[dict[str, np.ndarray]]) -> np.ndarray:
    policy.reset()
    return np.stack([policy.select_action(o) for o in steps])  # (T, A)


# --------------------------------------------------------------------------- training


TRAIN_CASES = [(c, "continuous", "l1") for c in CORES] + [
    ("ttm", "continuous", "mse"),
    ("ttm", "gmm", "l1"),
    ("ttm", "discrete", "l1"),
]


@pytest.mark.parametrize("core,head,loss", TRAIN_CASES)
def test_trains(core, head, loss, batch, stats):
    """Finite loss and gradients reaching every part; the loss falls over 30 Adam steps on
    one fixed batch (random crops included)."""
    policy = TTMPolicy(tiny(core, head, loss=loss), stats).train()
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    losses = []
    for i in range(30):
        loss_t, metrics = policy(batch)
        assert torch.isfinite(loss_t) and metrics["losses/total"] == pytest.approx(loss_t.item())
        opt.zero_grad()
        loss_t.backward()
        if i == 0:
            assert {"losses/total", "metrics/action_l1_normalised"} <= set(metrics)
            for part in (policy.net.cameras, policy.net.lowdim, policy.core, policy.head):
                grads = [p.grad for p in part.parameters() if p.grad is not None]
                assert grads and all(torch.isfinite(g).all() for g in grads)
                assert any(g.abs().sum() > 0 for g in grads)
        opt.step()
        losses.append(loss_t.item())
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < first - 0.25 * abs(first), f"{core}/{head}: loss {first:.3f} -> {last:.3f}"


def test_binary_gripper(batch, demos, stats):
    """The gripper as a binary output: its column is trained by cross-entropy on target > 0
    and acts as exactly open or closed; the other columns are regressed as before."""
    from ttm_policy.heads import ContinuousHead

    head = ContinuousHead(in_dim=4, action_dim=3, binary_gripper=True)
    params = torch.tensor([[[0.5, -0.5, 2.0]]])  # (1, K=1, A=3): gripper logit 2
    target = torch.tensor([[[0.0, 0.0, -1.0]]])  # the gripper should be open
    loss, parts = head.loss(params, target, torch.ones(1, 1, dtype=torch.bool))
    bce = torch.nn.functional.softplus(torch.tensor(2.0))  # -log(1 - sigmoid(2))
    torch.testing.assert_close(parts["gripper_bce"], bce)
    torch.testing.assert_close(loss, (0.5 + 0.5 + bce) / 3)
    assert head.predict(params)[0, 0].tolist() == [0.5, -0.5, 1.0]
    assert head.predict(-params)[0, 0, 2].item() == -1.0

    policy = TTMPolicy(tiny(binary_gripper=True), stats)
    loss, metrics = policy(batch)
    loss.backward()
    assert torch.isfinite(loss) and metrics["losses/gripper_bce"] > 0
    acts = rollout(policy, episode_obs(demos)[:5])
    assert set(np.unique(acts[:, 6]).tolist()) <= {-1.0, 1.0}
    with pytest.raises(ValueError, match="binary_gripper needs head='continuous'"):
        tiny(head="gmm", binary_gripper=True)


def test_aux_final_loss(demo_path, batch, stats):
    """aux_final_keys adds an L1 on the episode's final low-dim values, predicted at every
    valid step: it is logged, weighted into the total, and trains the aux head and the core."""
    cfg = tiny(aux_final_keys=("robot0_eef_pos",), aux_weight=0.5)
    policy = TTMPolicy(cfg, stats).eval()
    loss, metrics = policy(batch)
    plain = TTMPolicy(tiny(), stats)
    plain.load_state_dict(policy.state_dict(), strict=False)
    base, _ = plain.eval()(batch)
    assert metrics["losses/aux_final"] > 0
    assert loss.item() == pytest.approx(base.item() + 0.5 * metrics["losses/aux_final"], rel=1e-5)
    loss.backward()
    for part in (policy.net.aux_head, policy.core):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())

    # the target is batch["final"]: moving it changes the auxiliary loss
    final = batch["final"]["robot0_eef_pos"]
    moved = dict(batch, final={"robot0_eef_pos": final + 0.3})
    assert policy(moved)[1]["losses/aux_final"] != pytest.approx(metrics["losses/aux_final"])
    with pytest.raises(KeyError, match=r"batch\['final'\]"):
        policy({k: v for k, v in batch.items() if k != "final"})
    with pytest.raises(ValueError, match=r"aux_final_keys \['agentview_image'\] are images"):
        tiny(aux_final_keys=("agentview_image",))
    with pytest.raises(ValueError, match=r"aux_final_keys \['object'\] are not low-dim"):
        TTMPolicy(tiny(aux_final_keys=("object",)), stats)
    with pytest.raises(ValueError, match="aux_weight=-1"):
        tiny(aux_final_keys=("robot0_eef_pos",), aux_weight=-1.0)
    assert PolicyConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_padding_and_chunk_mask_do_not_count(batch, stats):
    """Changing actions on padded steps (mask False) leaves the loss unchanged."""
    policy = TTMPolicy(tiny(), stats).eval()  # eval: central crop, deterministic
    mask = batch["mask"]
    assert not mask.all(), "the fixture must have padded episodes"
    changed = dict(batch, actions=torch.where(mask[..., None], batch["actions"], 0.123))
    a, _ = policy(batch)
    b, _ = policy(changed)
    assert a.item() == pytest.approx(b.item(), abs=1e-6)


def test_chunk_targets_and_mask(demo_path, demos, stats):
    policy = TTMPolicy(tiny(action_horizon=4), stats)
    b = make_batch(demo_path, demos, horizon=4)
    target, valid = policy.targets(b)
    assert target.shape == (3, 12, 4, 7) and valid.shape == (3, 12, 4)
    # demo_2 has 7 steps: at step 5 only 2 of the 4 future actions exist
    assert valid[2, 5].tolist() == [True, True, False, False] and not valid[2, 8].any()
    loss, _ = policy(b)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match=r"action_horizon=4"):
        policy(make_batch(demo_path, demos))  # (B, T, 7) actions for a K=4 policy


@pytest.mark.parametrize("core", CORES)
def test_training_forward_equals_select_action_step_by_step(core, demo_path, demos, stats):
    """Training sees the memory that inference carries: on a training batch (every demo from
    its first step, padded to the longest, as ttm-train samples them; gradients cut every 2
    steps), the per-step outputs of the training forward with augmentation off equal
    `select_action` run step by step over each recorded episode, to 1e-5."""
    policy = TTMPolicy(tiny(core, bptt=2), stats).eval()
    batch = trim_padding(make_batch(demo_path, demos))
    with torch.no_grad():
        chunks = policy.head.predict(policy.head(policy.sequence_features(batch)[0]))
    trained = policy.normalizer.action.unnormalize(chunks).clamp(-1, 1)[:, :, 0]  # (B, T, A)
    for e, n in enumerate(demos.lengths):
        streamed = rollout(policy, episode_obs(demos, e))  # (n, A), the control loop
        np.testing.assert_allclose(trained[e, :n].numpy(), streamed, atol=1e-5, err_msg=f"demo {e}")


@pytest.mark.parametrize("core", CORES)
def test_training_on_pieces_with_carried_memory_equals_select_action(core, demos, stats):
    """ttm-train --chunk: lanes read episodes in 7-step pieces and carry the memory from one
    piece to the next (train.data.EpisodeStreams, the policy's training forward with
    `return_memory`); the per-step outputs with augmentation off still equal `select_action`
    run step by step over each episode, to 1e-5."""
    policy = TTMPolicy(tiny(core, bptt=2), stats).eval()
    C, lanes = 7, 2
    streams, pieces = EpisodeStreams(demos.lengths, lanes, C, seed=1), ChunkDataset(demos, C)
    outputs: dict[tuple[int, int], list] = {}  # (lane, demo) -> actions of its pieces
    memory, step = None, 0
    while len({e for (_, e) in outputs}) < len(demos.lengths) or step < 30:
        index = streams.batch(step)
        batch = torch.utils.data.default_collate([pieces[i] for i in index])
        with torch.no_grad():
            feats, _ = policy.sequence_features(batch, memory)
            _, _, memory = policy(batch, memory, return_memory=True)  # what ttm-train carries
            acts = policy.normalizer.action.unnormalize(policy.head.predict(policy.head(feats)))
        for lane, (e, start) in enumerate(index):
            if start == 0:
                outputs[(lane, e)] = []
            outputs[(lane, e)].append(acts.clamp(-1, 1)[lane, :, 0])
        step += 1
        if step > 200:
            raise AssertionError("the lanes did not visit every demo")
    checked = set()
    for (_lane, e), parts in outputs.items():
        n = int(demos.lengths[e])
        if len(parts) * C < n or e in checked:
            continue  # an episode the run stopped inside
        streamed = rollout(policy, episode_obs(demos, e))
        np.testing.assert_allclose(
            torch.cat(parts)[:n].numpy(), streamed, atol=1e-5, err_msg=f"demo {e}"
        )
        checked.add(e)
    assert checked == set(range(len(demos.lengths)))


@pytest.mark.parametrize("keys", [KEYS[:1], KEYS[2:]], ids=["camera-only", "lowdim-only"])
def test_single_kind_of_observation(keys, batch, demos, stats):
    policy = TTMPolicy(tiny(obs_keys=keys), stats)
    assert policy.cfg.num_tokens == (4 if keys == KEYS[:1] else 1)
    loss, _ = policy(batch)
    loss.backward()
    steps = [{k: o[k] for k in keys} for o in episode_obs(demos)[:3]]
    assert rollout(policy, steps).shape == (3, 7)


# --------------------------------------------------------------------------- inference


def test_select_action_shape_dtype_bounds(demos, stats):
    wide = dict(
        stats, **{"action/min": stats["action/min"] - 5, "action/max": stats["action/max"] + 5}
    )
    policy = TTMPolicy(tiny(), wide)  # un-normalised outputs can leave [-1, 1]: clipped
    with torch.no_grad():
        policy.head.net[-1].bias.fill_(3.0)
    acts = rollout(policy, episode_obs(demos)[:4])
    assert acts.shape == (4, 7) and acts.dtype == np.float32
    assert np.abs(acts).max() <= 1.0 and np.isclose(np.abs(acts), 1.0).any()
    assert policy.training  # select_action restores the mode it found


@pytest.mark.parametrize("head", ["gmm", "discrete"])
def test_sampled_actions(head, demos, stats):
    """sample_actions=True draws from the head's distribution: in bounds, and not always the
    most likely action."""
    policy = TTMPolicy(tiny(head=head, sample_actions=True), stats)
    steps = episode_obs(demos)[:4]
    a, b = rollout(policy, steps), rollout(policy, steps)
    assert a.dtype == np.float32 and np.abs(a).max() <= 1.0
    assert not np.array_equal(a, b)


def test_a_sampled_binary_gripper_closes_at_the_rate_its_logit_gives(demos, stats):
    """binary_gripper + sample_actions: the gripper is exactly open or closed, drawn with
    probability sigmoid(logit) -- at logit 0 both occur -- while the regressed dimensions are
    those of the most likely action; without sampling a logit of 0 never closes."""
    cfg = tiny(binary_gripper=True, sample_actions=True)
    policy = TTMPolicy(cfg, stats)
    with torch.no_grad():  # the gripper logit's row of the last layer: logit 0 everywhere
        policy.head.net[-1].weight[-1].zero_()
        policy.head.net[-1].bias[-1] = 0.0
    steps = episode_obs(demos)[:8]
    torch.manual_seed(0)
    sampled = np.concatenate([rollout(policy, steps) for _ in range(8)])  # 64 draws
    policy.cfg.sample_actions = False
    likely = rollout(policy, steps)
    assert set(np.unique(sampled[:, -1])) == {-1.0, 1.0}
    assert 0.25 < (sampled[:, -1] > 0).mean() < 0.75  # 64 draws at p = 0.5
    assert (likely[:, -1] == -1.0).all()  # logit 0 is not > 0: open
    np.testing.assert_allclose(sampled[:8, :-1], likely[:, :-1], atol=1e-6)


@pytest.mark.parametrize("core", CORES)
def test_streaming_and_sequence_equal_an_independent_unroll(core, demos, stats):
    """select_action frame by frame (numpy obs, `core.step`, state carried) and
    `predict_chunks` (the sequence form, whose TTM loops over `step`) both equal the episode
    computed a third way: every frame encoded at once, then the core run without `step` -- the
    TTMs by the paper-equation reference (test_ttm_reference), the others by their sequence
    form without a reset mask (one nn.LSTM / nn.GRU call; one causal-masked pass)."""
    policy = TTMPolicy(tiny(core), stats).eval()
    obs, _ = demos.episode(1)
    x = {k: torch.from_numpy(v)[None] for k, v in obs.items()}  # (1, T, ...)
    with torch.no_grad():
        tokens = policy.encode(x, random_crop=False)  # (1, T, N, D)
        if core.startswith("ttm"):
            out = unroll(Params(policy.core), policy.core.cfg, tokens.double())[0].float()
        else:
            out, _ = policy.core(tokens)  # (1, T, R, D)
        chunks = policy.head.predict(policy.head(policy.features(out)))  # (1, T, K, A)
    want = policy.normalizer.action.unnormalize(chunks).clamp(-1, 1)[0, :, 0].numpy()  # (T, A)
    np.testing.assert_allclose(rollout(policy, episode_obs(demos, 1)), want, atol=1e-5)
    np.testing.assert_allclose(policy.predict_chunks(x)[0, :, 0].numpy(), want, atol=1e-5)


def test_memory_is_used_and_reset(demos, stats):
    """TTM actions depend on the past; after reset() the same frames give the same actions."""
    policy = TTMPolicy(tiny(), stats)
    steps = episode_obs(demos, 1)
    a = rollout(policy, steps)
    b = rollout(policy, steps[3:])  # same frames, different history
    assert not np.allclose(a[3:], b, atol=1e-6)
    np.testing.assert_array_equal(rollout(policy, steps), a)


def test_batched_envs_and_partial_reset(demos, stats):
    policy = TTMPolicy(tiny(), stats)
    steps = episode_obs(demos, 1)
    stack = [{k: np.stack([o[k], o[k]]) for k in o} for o in steps]
    policy.reset()
    for o in stack[:3]:
        out = policy.select_action(o)
    assert out.shape == (2, 7) and out.dtype == np.float32
    policy.reset(np.array([True, False]))  # env 0 starts a new episode
    both = policy.select_action(stack[3])
    fresh = rollout(policy, steps[3:4])[0]
    single = rollout(policy, steps[:4])[-1]
    np.testing.assert_allclose(both[0], fresh, atol=1e-5)
    np.testing.assert_allclose(both[1], single, atol=1e-5)
    with pytest.raises(ValueError, match="reset"):
        policy.select_action(stack[0])  # 2 envs while the policy runs 1


def test_observation_errors(demos, stats):
    policy = TTMPolicy(tiny(), stats)
    o = episode_obs(demos)[0]
    with pytest.raises(KeyError, match="robot0_eef_pos"):
        policy.select_action({k: v for k, v in o.items() if k != "robot0_eef_pos"})
    with pytest.raises(ValueError, match="uint8"):
        policy.select_action(dict(o, agentview_image=o["agentview_image"].astype(np.float32)))
    with pytest.raises(ValueError, match=r"agentview_image.*\(B, T, 32, 32, 3\)"):
        policy.select_action(dict(o, agentview_image=np.zeros((40, 40, 3), np.uint8)))


@pytest.mark.parametrize("core", CORES)
def test_non_finite_input_is_refused_and_leaves_the_memory(core, demos, stats):
    """A NaN or inf low-dim value raises a ValueError naming the key, and the next good
    observations give exactly the actions of a run that never saw the bad one."""
    policy = TTMPolicy(tiny(core), stats).eval()
    steps = episode_obs(demos, 1)
    clean = rollout(policy, steps)
    policy.reset()
    got = [policy.select_action(o) for o in steps[:3]]
    for bad_value in (np.nan, np.inf, 1e300):  # 1e300 overflows float32 to inf
        bad = dict(steps[3], robot0_eef_pos=steps[3]["robot0_eef_pos"].copy())
        bad["robot0_eef_pos"][1] = bad_value
        with pytest.raises(ValueError, match=r"robot0_eef_pos.*non-finite"):
            policy.select_action(bad)
    got += [policy.select_action(o) for o in steps[3:]]
    np.testing.assert_array_equal(np.stack(got), clean)
    with pytest.raises(ValueError, match=r"robot0_eef_pos.*width 2, expected 3"):
        policy.select_action(dict(steps[0], robot0_eef_pos=np.zeros(2)))


def test_diverged_weights_never_give_an_action(demos, stats):
    """NaN weights: select_action raises instead of returning NaN, and keeps its state."""
    policy = TTMPolicy(tiny(), stats).eval()
    steps = episode_obs(demos, 1)
    policy.reset()
    policy.select_action(steps[0])
    state = policy._state.clone()
    with torch.no_grad():
        policy.head.parameters().__next__().fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite action"):
        policy.select_action(steps[1])
    torch.testing.assert_close(policy._state, state, rtol=0, atol=0)


def chunks_by_hand(policy: TTMPolicy, steps) -> np.ndarray:
    """The chunk each step predicts (un-normalised, clipped): (T, K, A), stepping the core on
    every frame through the explicit-state `step`."""
    state, out = policy.init_state(1), []
    with torch.no_grad():
        for o in steps:
            chunk, state = policy.step(
                {k: torch.from_numpy(np.asarray(v))[None] for k, v in o.items()}, state
            )
            out.append(chunk[0].numpy())
    return np.stack(out)


def test_step_is_the_pieces(demos, stats):
    """`step` = encode -> core.step -> head -> un-normalise -> clip, with the state explicit."""
    policy = TTMPolicy(tiny(), stats).eval()
    o = episode_obs(demos)[0]
    state = policy.init_state(1)
    with torch.no_grad():
        x = {k: torch.from_numpy(np.asarray(v))[None, None] for k, v in o.items()}
        y, want_state = policy.core.step(policy.encode(x, random_crop=False)[:, 0], state)
        want = policy.normalizer.action.unnormalize(policy.head(policy.features(y))).clamp(-1, 1)
        got, got_state = policy.step({k: v[:, 0] for k, v in x.items()}, state)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_state, want_state)
    assert got.shape == (1, 1, 7) and not torch.equal(got_state, state)


def test_chunk_queue(demos, stats):
    K = 3
    policy = TTMPolicy(tiny(action_horizon=K, chunk_execution="queue"), stats).eval()
    steps = episode_obs(demos, 1)[:8]
    chunks = chunks_by_hand(policy, steps)  # (T, K, A)
    want = np.stack([chunks[K * (t // K), t % K] for t in range(len(steps))])
    np.testing.assert_allclose(rollout(policy, steps), want, atol=1e-5)


def test_chunk_ensemble(demos, stats):
    K, m = 3, 0.5
    policy = TTMPolicy(
        tiny(action_horizon=K, chunk_execution="ensemble", ensemble_decay=m), stats
    ).eval()
    steps = episode_obs(demos, 1)[:8]
    chunks = chunks_by_hand(policy, steps)
    want = []
    for t in range(len(steps)):
        made = list(range(max(0, t - K + 1), t + 1))  # chunks covering step t, oldest first
        w = np.exp(-m * np.arange(len(made)))  # ACT: the oldest gets weight 1
        preds = np.stack([chunks[s, t - s] for s in made])
        want.append((w[:, None] * preds).sum(0) / w.sum())
    np.testing.assert_allclose(rollout(policy, steps), np.stack(want), atol=1e-5)


# --------------------------------------------------------------------------- normalisation


def test_normalisation_round_trip(demos, stats, batch):
    policy = TTMPolicy(tiny(), stats)
    r = policy.normalizer.action
    a = torch.from_numpy(demos.actions)
    n = r.normalize(a)
    assert n.min() >= -1 - 1e-6 and n.max() <= 1 + 1e-6
    torch.testing.assert_close(r.unnormalize(n), a, atol=1e-6, rtol=0)
    lo, hi = torch.from_numpy(stats["action/min"]), torch.from_numpy(stats["action/max"])
    ranged = (hi - lo) > 1e-6
    assert ranged.tolist() == [True, True, True, False, False, False, True]
    torch.testing.assert_close(r.normalize(lo)[ranged], -torch.ones(4))
    torch.testing.assert_close(r.normalize(hi)[ranged], torch.ones(4))
    x = torch.full((7,), 0.3)
    assert r.normalize(x)[3:6].tolist() == pytest.approx([0.3] * 3)  # constant dims pass through
    pos = policy.normalizer.obs["robot0_eef_pos"]
    z = torch.tensor([0.0, 0.0, 0.9])
    assert pos.normalize(z)[2].item() == pytest.approx(0.1)  # constant obs dim: centred only
    target, _ = policy.targets(batch)
    torch.testing.assert_close(
        r.unnormalize(target), batch["actions"][:, :, None], atol=1e-6, rtol=0
    )


def test_range_rejects_bad_stats():
    r = Range(3, constant="identity")
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        r.set(np.zeros(2), np.ones(2), "action")
    with pytest.raises(ValueError, match="not finite"):
        r.set(np.ones(3), np.zeros(3), "action")


def test_missing_stats_named(stats):
    partial = {k: v for k, v in stats.items() if not k.startswith("obs/robot0_gripper_qpos")}
    partial["obs/robot0_gripper_qpos/min"] = stats["obs/robot0_gripper_qpos/min"]
    with pytest.raises(KeyError, match="obs/robot0_gripper_qpos/max"):
        TTMPolicy(tiny(), partial)
    with pytest.raises(ValueError, match="width unknown"):
        TTMPolicy(tiny())  # neither stats nor lowdim_dims


# --------------------------------------------------------------------------- config


def test_config_validation_and_json_round_trip():
    cfg = tiny("transformer", "gmm", action_horizon=2)
    assert cfg.num_tokens == 2 * 4 + 1 and cfg.transformer.input_tokens == 9
    assert cfg.ttm.dim == 32 and cfg.lstm.dim == 32
    assert PolicyConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert tiny("ttm-memoryless").ttm.memoryless and not tiny("ttm").ttm.memoryless
    with pytest.raises(ValueError, match="crop_size=40 > image_size=32"):
        tiny(crop_size=40)
    with pytest.raises(ValueError, match="core='mamba'"):
        tiny("mamba")
    with pytest.raises(ValueError, match="obs_keys"):
        PolicyConfig(obs_keys=())
    with pytest.raises(ValueError, match=r"unknown PolicyConfig fields \['depth'\]"):
        PolicyConfig.from_dict({"depth": 3})


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize(
    "core,head", [(c, "continuous") for c in CORES] + [("ttm", "gmm"), ("ttm", "discrete")]
)
def test_save_load_identical_actions(core, head, batch, demos, stats, tmp_path):
    policy = TTMPolicy(tiny(core, head, action_horizon=2, chunk_execution="ensemble"), stats)
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    loss, _ = policy(make_batch_k2(batch))
    loss.backward()
    opt.step()  # weights away from their initial values
    steps = episode_obs(demos, 2)
    want = rollout(policy, steps)
    out = policy.save_pretrained(tmp_path / "ckpt")
    assert sorted(os.listdir(out)) == [CONFIG_NAME, WEIGHTS_NAME]
    loaded = TTMPolicy.from_pretrained(out)
    assert not loaded.training and loaded.cfg == policy.cfg
    for k, v in policy.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    np.testing.assert_array_equal(rollout(loaded, steps), want)


def make_batch_k2(batch):
    """(B, T, 7) actions -> K=2 chunks (the next action repeated at the end)."""
    a = batch["actions"]
    nxt = torch.cat([a[:, 1:], a[:, -1:]], dim=1)
    return dict(batch, actions=torch.stack([a, nxt], dim=2))


def test_checkpoint_errors(stats, tmp_path):
    policy = TTMPolicy(tiny(), stats)
    ckpt = save_pretrained(policy, tmp_path / "ckpt")

    with pytest.raises(FileNotFoundError, match="nowhere"):
        TTMPolicy.from_pretrained(tmp_path / "nowhere")

    broken = tmp_path / "no_weights"
    save_pretrained(policy, broken)
    (broken / WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_NAME):
        TTMPolicy.from_pretrained(broken)

    (broken / CONFIG_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match=rf"{CONFIG_NAME}: not valid JSON"):
        TTMPolicy.from_pretrained(broken)

    doc = json.loads((ckpt / CONFIG_NAME).read_text())
    (broken / CONFIG_NAME).write_text(json.dumps(dict(doc, format_version=99)))
    with pytest.raises(CheckpointError, match="format_version 99"):
        TTMPolicy.from_pretrained(broken)

    doc["policy"]["wings"] = 2
    (broken / CONFIG_NAME).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="wings"):
        TTMPolicy.from_pretrained(broken)

    # weights of a dim=32 model under a config that says dim=48
    mismatch = tmp_path / "mismatch"
    save_pretrained(policy, mismatch)
    doc = json.loads((mismatch / CONFIG_NAME).read_text())
    doc["policy"]["dim"] = 48
    (mismatch / CONFIG_NAME).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=rf"{WEIGHTS_NAME}: tensor '.*' has shape"):
        TTMPolicy.from_pretrained(mismatch)

    # a different core: tensors missing / unexpected
    doc["policy"].update(dim=32, core="lstm")
    (mismatch / CONFIG_NAME).write_text(json.dumps(doc))
    with pytest.raises(
        CheckpointError,
        match=r"weights do not match config.json: missing \d+ tensors, first 'net\.core\.",
    ):
        TTMPolicy.from_pretrained(mismatch)

    garbage = tmp_path / "garbage"
    save_pretrained(policy, garbage)
    (garbage / WEIGHTS_NAME).write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        TTMPolicy.from_pretrained(garbage)


def test_atomic_overwrite(stats, tmp_path):
    target = tmp_path / "last"
    a = TTMPolicy(tiny(), stats)
    save_pretrained(a, target)
    b = TTMPolicy(tiny(), stats)
    save_pretrained(b, target)  # replaces the existing checkpoint
    loaded = TTMPolicy.from_pretrained(target)
    torch.testing.assert_close(loaded.net.source_embedding, b.net.source_embedding)
    with pytest.raises(RuntimeError, match="boom"), atomic_directory(target) as tmp:
        (tmp / CONFIG_NAME).write_text("{}")
        raise RuntimeError("boom")
    torch.testing.assert_close(
        TTMPolicy.from_pretrained(target).net.source_embedding, b.net.source_embedding
    )
    assert sorted(os.listdir(tmp_path)) == ["last"]  # no temporary directories left


# --------------------------------------------------------------------------- a real env


def test_select_action_on_point_cue():
    envs = pytest.importorskip("envs")
    import gymnasium as gym

    assert envs.task_id("PointCue") == "ttm/PointCue-v0"
    env = gym.make("ttm/PointCue-v0")
    try:
        obs, _ = env.reset(seed=0)
        size = obs["agentview_image"].shape[0]
        keys = ("agentview_image", "robot0_eef_pos")
        st = {
            "obs/robot0_eef_pos/min": np.array([-0.45, -0.45, 0.0], np.float32),
            "obs/robot0_eef_pos/max": np.array([0.45, 0.45, 0.0], np.float32),
            "action/min": -np.ones(7, np.float32),
            "action/max": np.ones(7, np.float32),
        }
        cfg = tiny(obs_keys=keys, image_size=size, crop_size=size - 4)
        policy = TTMPolicy(cfg, st)
        policy.reset()
        for _ in range(5):
            action = policy.select_action(obs)
            assert action.shape == (7,) and action.dtype == np.float32
            assert np.abs(action).max() <= 1.0
            obs, *_ = env.step(action)
    finally:
        env.close()


def test_checkpoints_from_before_the_network_split_load(demos, stats, tmp_path):
    """Weights saved when the network's modules sat on the policy itself (`core.*`, no
    `net.` prefix) load into the same policy and act the same."""
    from safetensors.torch import load_file, save_file

    policy = TTMPolicy(tiny(), stats).eval()
    save_pretrained(policy, tmp_path / "old")
    weights = load_file(tmp_path / "old" / WEIGHTS_NAME)
    old = {k.removeprefix("net."): v for k, v in weights.items()}
    assert "core.memory_init" in old or any(k.startswith("core.") for k in old)
    save_file(old, tmp_path / "old" / WEIGHTS_NAME)
    loaded = TTMPolicy.from_pretrained(tmp_path / "old")
    steps = episode_obs(demos, 1)
    np.testing.assert_array_equal(rollout(loaded, steps), rollout(policy, steps))
