"""One policy for several tasks: real Meta-World demonstrations of two tasks (MW-reach and
MW-push, two short episodes each at 24 px), trained together by ttm-train, evaluated task by
task by ttm-eval, exported with the task as a graph input and run by the torch-free runtime."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from envs.collect import Args, collect
from eval.evaluate import EvalConfig, evaluate
from train.data import DatasetError, EpisodeStreams, compute_stats
from train.train import TrainConfig, build_data, train
from ttm_policy import TTMPolicy
from ttm_policy.export import export
from ttm_policy.runtime import OnnxPolicy, PolicyLoadError

TASKS = ("MW-reach", "MW-push")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """task -> its dataset: 2 expert episodes (one in mask/train, one in mask/valid), 24 px."""
    root = tmp_path_factory.mktemp("mt")
    out = {}
    for task in TASKS:
        out[task] = root / f"{task}.hdf5"
        collect(
            Args(task=task, out=out[task], episodes=2, seed=0, image_size=24,
                 valid_fraction=0.5, env_kwargs='{"horizon": 150}')
        )  # fmt: skip
    return out


def tiny(cfg: TrainConfig) -> TrainConfig:
    cfg.model.dim, cfg.model.ttm.layers, cfg.model.ttm.memory_tokens = 32, 1, 8
    cfg.model.ttm.mlp_dim, cfg.model.head_hidden = 64, 64
    cfg.model.conv_channels = (8, 8, 16, 16)
    return cfg


def run_config(datasets, out: Path, **kw) -> TrainConfig:
    kw = {"steps": 2, "batch_size": 2, "chunk": 16, "save_every": 2, "valid_every": 0,
          "threads": 1, **kw}  # fmt: skip
    return tiny(TrainConfig(dataset=tuple(datasets), out=out, **kw))


def first_steps(path: Path, keys, n: int) -> list[dict[str, np.ndarray]]:
    """The first n observations of the file's first demo, as the env gave them."""
    with h5py.File(path) as f:
        obs = f["data/demo_0/obs"]
        return [{k: obs[k][t] for k in keys} for t in range(n)]


@pytest.fixture(scope="module")
def trained(files, tmp_path_factory) -> Path:
    """A 4-step multi-task run, with validation and rollouts of both tasks (10-step episodes)
    at step 2."""
    out = tmp_path_factory.mktemp("run") / "mt"
    cfg = run_config(files.values(), out, steps=4, eval_every=2, eval_episodes=1,
                     eval_env_kwargs='{"horizon": 10}', valid_every=2, valid_batches=1,
                     log_every=2)  # fmt: skip
    train(cfg)
    return out


def test_each_file_is_a_task_batches_mix_them_and_the_statistics_cover_all(files, tmp_path):
    cfg = run_config(files.values(), tmp_path / "run", valid_every=1)
    data = build_data(cfg, main_rank=True)
    demos = data.demos
    assert data.model_cfg.tasks == TASKS and list(demos.tasks) == list(TASKS)
    assert [t["env_name"] for t in demos.tasks.values()] == [f"ttm/{t}-v0" for t in TASKS]
    assert demos.task_ids.tolist() == [0, 1]  # one training demo per file, in --dataset order
    actions = []
    for path in files.values():
        with h5py.File(path) as f:
            (name,) = [n.decode() for n in f["mask/train"][()]]
            actions.append(f[f"data/{name}/actions"][()])
    np.testing.assert_array_equal(
        compute_stats(demos)["action/min"], np.concatenate(actions).min(0).astype(np.float32)
    )
    # A batch holds both tasks, each row tagged with its episode's task.
    lanes = EpisodeStreams(demos.lengths, 2, cfg.chunk).batch(0)
    batch = torch.utils.data.default_collate([data.dataset[i] for i in lanes])
    assert sorted(batch["task"].tolist()) == [0, 1]
    assert batch["task"].tolist() == [int(demos.task_ids[e]) for e, _ in lanes]
    valid = data.valid_set.demos  # each file's mask/valid demo, tagged the same way
    assert valid.task_ids.tolist() == [0, 1] and list(valid.tasks) == list(TASKS)


def _copy(src: Path, dst: Path, edit) -> Path:
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def test_datasets_that_do_not_fit_one_policy_are_refused_naming_the_files(files, tmp_path):
    reach, push = files["MW-reach"], files["MW-push"]

    def five_d(f):
        for name in f["data"]:
            a = f[f"data/{name}/actions"][()]
            del f[f"data/{name}/actions"]
            f[f"data/{name}/actions"] = a[:, [0, 1, 2, 3, 3]]

    def no_gripper(f):
        for name in f["data"]:
            del f[f"data/{name}/obs/robot0_gripper_qpos"]

    def no_env_name(f):
        f["data"].attrs["env_args"] = json.dumps({"type": 2, "env_kwargs": {}})

    wide = _copy(push, tmp_path / "wide.hdf5", five_d)
    with pytest.raises(
        DatasetError, match=r"wide\.hdf5: 5-D actions, but .*MW-reach\.hdf5 has 4-D"
    ):
        build_data(run_config([reach, wide], tmp_path / "a"), True)
    fewer = _copy(push, tmp_path / "fewer.hdf5", no_gripper)
    with pytest.raises(DatasetError, match=r"fewer\.hdf5: its default observation keys"):
        build_data(run_config([reach, fewer], tmp_path / "b"), True)
    keys = ("corner_image", "robot0_eef_pos", "robot0_gripper_qpos")
    with pytest.raises(DatasetError, match=r"fewer\.hdf5.*robot0_gripper_qpos"):
        build_data(run_config([reach, fewer], tmp_path / "c", obs_keys=keys), True)
    nameless = _copy(push, tmp_path / "nameless.hdf5", no_env_name)
    with pytest.raises(DatasetError, match=r"nameless\.hdf5: .*names no env_name"):
        build_data(run_config([reach, nameless], tmp_path / "d"), True)
    with pytest.raises(ValueError, match="more than once"):
        run_config([reach, reach], tmp_path / "e")


def test_files_of_one_task_train_a_single_task_policy(files, tmp_path):
    again = tmp_path / "reach_again.hdf5"
    again.write_bytes(files["MW-reach"].read_bytes())
    data = build_data(run_config([files["MW-reach"], again], tmp_path / "run"), True)
    assert data.model_cfg.tasks == () and data.demos.task_ids is None
    assert data.demos.env_args["env_name"] == "ttm/MW-reach-v0" and len(data.demos.names) == 2
    assert "task" not in data.dataset[(0, 0)]


def test_the_task_changes_the_action_and_the_checkpoint_keeps_the_task_names(files, trained):
    ck = trained / "checkpoints" / "last"
    doc = json.loads((ck / "config.json").read_text())["policy"]
    assert doc["tasks"] == list(TASKS)
    env_args = json.loads((ck / "task_env_args.json").read_text())
    assert list(env_args) == list(TASKS) and not (ck / "env_args.json").exists()
    assert json.loads((trained / "config.json").read_text())["dataset"] == [
        str(p) for p in files.values()
    ]
    # Training-time rollouts ran each task; the best checkpoint keeps the envs too.
    rows = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    row = next(r for r in rows if "rollout/success_rate" in r)
    assert {"rollout/MW-reach/success_rate", "rollout/MW-push/success_rate"} <= set(row)
    assert np.isfinite(row["valid/loss"])  # both tasks' mask/valid demos
    assert (trained / "checkpoints" / "best" / "task_env_args.json").is_file()

    policy = TTMPolicy.from_pretrained(ck)
    obs = first_steps(files["MW-push"], policy.cfg.obs_keys, 1)[0]
    actions = {}
    for task in (*TASKS, 1):
        policy.reset()
        actions[task] = policy.select_action(obs, task=task)
    assert not np.allclose(actions["MW-reach"], actions["MW-push"], atol=1e-4)
    np.testing.assert_array_equal(actions[1], actions["MW-push"])  # by index
    policy.reset()
    with pytest.raises(ValueError, match=r"needs the task: one of \['MW-reach', 'MW-push'\]"):
        policy.select_action(obs)
    with pytest.raises(ValueError, match="not one of the policy's"):
        policy.select_action(obs, task="MW-pick-place")
    policy.set_task("MW-push")  # what ttm-eval does: the loop calls select_action(obs)
    np.testing.assert_array_equal(policy.select_action(obs), actions["MW-push"])
    # Batched envs may run different tasks, one per row.
    policy.reset()
    both = {k: np.stack([v, v]) for k, v in obs.items()}
    np.testing.assert_allclose(
        policy.select_action(both, task=list(TASKS)),
        np.stack([actions["MW-reach"], actions["MW-push"]]),
        atol=1e-6,
    )


def test_resume_continues_the_mixed_batches_exactly(files, trained, tmp_path):
    out = tmp_path / "run"
    train(run_config(files.values(), out))
    summary = train(run_config(files.values(), out, steps=4, resume=True))
    assert summary["resumed_from"] == 2
    straight = tmp_path / "straight"
    train(run_config(files.values(), straight, steps=4))
    for name, ref in TTMPolicy.from_pretrained(straight / "checkpoints/last").state_dict().items():
        got = TTMPolicy.from_pretrained(out / "checkpoints/last").state_dict()[name]
        torch.testing.assert_close(got, ref, rtol=0, atol=0, msg=name)
    with pytest.raises(ValueError, match=r"--resume: the model differs .*tasks: \['MW-reach'"):
        train(run_config(reversed(files.values()), out, steps=6, resume=True))


def test_ttm_eval_runs_every_task_and_writes_a_summary(trained, tmp_path):
    ck = trained / "checkpoints" / "last"
    summary = evaluate(EvalConfig(checkpoint=ck, episodes=1, max_steps=3, out=tmp_path / "all"))
    assert summary["tasks"] == list(TASKS) and summary["episodes_run"] == 2
    on_disk = json.loads((tmp_path / "all" / "eval.json").read_text())
    assert on_disk["per_task"].keys() == set(TASKS)
    rates = []
    for task in TASKS:
        report = json.loads((tmp_path / "all" / task / "eval.json").read_text())
        assert report["task"] == task and report["env"] == f"ttm/{task}-v0"
        assert report["lengths"] == [3] and report["env_kwargs"]["horizon"] == 150  # its file's
        rates.append(report["success_rate"])
    assert on_disk["success_rate"] == pytest.approx(np.mean(rates))
    one = evaluate(EvalConfig(checkpoint=ck, episodes=1, max_steps=3, out=tmp_path / "one",
                              task="MW-push"))  # fmt: skip
    assert one["task"] == "MW-push" and not (tmp_path / "one" / "eval.json").exists()
    with pytest.raises(ValueError, match=r"--task MW-pick-place: .*trained on"):
        evaluate(EvalConfig(checkpoint=ck, episodes=1, task="MW-pick-place", out=tmp_path / "x"))


def test_export_takes_the_task_and_the_runtime_matches_torch_for_each_task(
    files, trained, tmp_path
):
    ck = trained / "checkpoints" / "last"
    export(ck, tmp_path / "export")
    spec = json.loads((tmp_path / "export" / "policy_spec.json").read_text())
    assert spec["format_version"] == 3 and spec["task"]["vocabulary"] == list(TASKS)
    assert list(spec["task"]["env_args"]) == list(TASKS)
    policy = TTMPolicy.from_pretrained(ck)
    runtime = OnnxPolicy(tmp_path / "export")
    steps = first_steps(files["MW-push"], policy.cfg.obs_keys, 8)
    assert not runtime(steps[0]).any() and "no task set" in runtime.last_error
    last = {}
    for task in TASKS:
        runtime.reset(task=task)
        policy.reset()
        policy.set_task(task)
        for obs in steps:
            got, want = runtime(obs), policy.select_action(obs)
            assert runtime.last_error is None, runtime.last_error
            np.testing.assert_allclose(got, want, atol=1e-5)
        last[task] = got
    assert not np.allclose(last["MW-reach"], last["MW-push"], atol=1e-4)
    assert runtime.task == "MW-push"
    runtime.reset()  # the task stays set
    feed, problems = runtime.check_observation(steps[0])  # (1, ...) float32 low-dim
    chunk, _ = runtime.step(feed, runtime.initial_state(1), np.array([1]))  # the pure form
    other, _ = runtime.step(feed, runtime.initial_state(1), np.array([0]))
    assert not problems and not np.allclose(other, chunk, atol=1e-4)
    np.testing.assert_allclose(runtime(steps[0]), chunk[0, 0], atol=1e-6)
    with pytest.raises(ValueError, match="not one of the export's"):
        runtime.reset(task="MW-pick-place")
    with pytest.raises(ValueError, match="export's tasks"):
        OnnxPolicy(tmp_path / "export", task=2)


def test_a_single_task_policy_and_its_export_take_no_task(files, tmp_path):
    out = tmp_path / "run"
    train(run_config([files["MW-reach"]], out))
    ck = out / "checkpoints" / "last"
    assert "tasks" not in json.loads((ck / "config.json").read_text())["policy"]
    assert (ck / "env_args.json").is_file() and not (ck / "task_env_args.json").exists()
    policy = TTMPolicy.from_pretrained(ck)
    assert not any("task" in name for name in policy.state_dict())
    obs = first_steps(files["MW-reach"], policy.cfg.obs_keys, 1)[0]
    with pytest.raises(ValueError, match="trained on one task and takes none"):
        policy.select_action(obs, task="MW-reach")
    export(ck, tmp_path / "export")
    spec = json.loads((tmp_path / "export" / "policy_spec.json").read_text())
    assert spec["format_version"] == 2 and "task" not in spec
    runtime = OnnxPolicy(tmp_path / "export")
    assert runtime.tasks == () and runtime(obs).shape == (4,) and runtime.last_error is None
    with pytest.raises(ValueError, match="single-task policy; it takes none"):
        runtime.set_task("MW-reach")


def test_the_runtime_refuses_a_task_entry_without_its_version(files, trained, tmp_path):
    from ttm_policy.runtime import spec_digest

    export(trained / "checkpoints" / "last", tmp_path / "export")
    path = tmp_path / "export" / "policy_spec.json"
    spec = json.loads(path.read_text())
    spec["format_version"] = 2
    spec["spec_sha256"] = spec_digest(spec)
    path.write_text(json.dumps(spec))
    with pytest.raises(PolicyLoadError, match="format_version 3 .* and a `task` entry"):
        OnnxPolicy(tmp_path / "export")
