"""ttm-train's command line offers only flags that take effect: none for the fields the trainer
fills from the data and --policy, none for the per-core sizes PolicyConfig sets itself."""

from pathlib import Path

import pytest
import tyro

from train.presets import cpu_model, gpu_model, preset
from train.train import TrainConfig, main, parse_args
from ttm_policy import CausalTransformerConfig, LSTMConfig, TTMConfig

FILLED = (
    "--model.obs-keys",  # --obs-keys or the dataset's keys
    "--model.core",  # --policy
    "--model.image-size",  # the dataset's images
    "--model.crop-size",  # --crop, a fraction of the dataset's image side
    "--model.ttm.dim",  # --model.dim, for every core
    "--model.lstm.dim",
    "--model.transformer.dim",
    "--model.ttm.input-tokens",  # N, from the cameras and low-dim keys
    "--model.lstm.input-tokens",
    "--model.gru.dim",
    "--model.gru.input-tokens",
    "--model.transformer.input-tokens",
    "--model.ttm.memoryless",  # --policy ttm-memoryless
    "--model.action-dim",  # the dataset's actions
    "--model.tasks",  # the datasets' tasks
)


def test_help_lists_no_flag_that_does_nothing(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    flags = set(capsys.readouterr().out.replace(",", " ").split())
    assert {"--policy", "--obs-keys", "--model.dim", "--model.ttm.layers", "--crop"} <= flags
    assert not flags & set(FILLED)


@pytest.mark.parametrize("flag, value", [("--model.ttm.dim", "64"), ("--model.core", "lstm")])
def test_a_filled_field_given_on_the_command_line_is_an_error(capsys, flag, value):
    with pytest.raises(SystemExit) as e:
        main(["--dataset", "d.hdf5", flag, value])
    assert e.value.code == 2 and flag in capsys.readouterr().err


@pytest.mark.parametrize("core, group", [("ttm", "ttm"), ("lstm", "lstm"), ("none", "transformer")])
def test_help_shows_the_chosen_cores_settings_only(monkeypatch, capsys, core, group):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as e:
        main(["--policy", core, "--help"])
    assert e.value.code == 0
    flags = set(capsys.readouterr().out.replace(",", " ").split())
    groups = {f.split(".")[1] for f in flags if f.startswith("--model.") and f.count(".") == 2}
    assert groups == {group}, groups


def test_another_cores_flag_is_an_error_naming_the_core_it_applies_to(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--dataset", "d.hdf5", "--model.lstm.hidden", "32"])
    assert e.value.code == 2
    assert "--policy ttm does not read (they apply to --policy lstm)" in capsys.readouterr().err
    cfg = parse_args(["--dataset", "d.hdf5", "--policy=lstm", "--model.lstm.hidden", "32"])
    assert type(cfg) is TrainConfig and type(cfg.model) is type(cpu_model())
    assert (cfg.policy, cfg.model.lstm.hidden) == ("lstm", 32)
    assert cfg.model.ttm == cpu_model().ttm  # the other groups keep the preset's values
    transformer = parse_args(
        ["--dataset", "d.hdf5", "--policy", "none", "--model.transformer.layers", "2"]
    )
    assert transformer.model.transformer.layers == 2


def test_defaults_are_unchanged_and_dim_reaches_every_core():
    """The default invocation builds the very config it built before; --model.dim reaches every
    core, and the per-core flags that remain take effect."""
    cfg = tyro.cli(TrainConfig, args=["--dataset", "d.hdf5"])
    assert cfg == TrainConfig(dataset=Path("d.hdf5")) == parse_args(["--dataset", "d.hdf5"])
    args = ["--dataset", "d.hdf5", "--model.dim", "96", "--model.ttm.heads", "12"]
    args += ["--model.transformer.heads", "12", "--model.ttm.summariser", "linear"]
    m = tyro.cli(TrainConfig, args=args).model
    assert type(m.ttm) is TTMConfig and type(m.lstm) is LSTMConfig
    assert type(m.transformer) is CausalTransformerConfig
    assert m.ttm.dim == m.lstm.dim == m.transformer.dim == 96
    assert m.ttm.heads == m.transformer.heads == 12 and m.ttm.summariser == "linear"
    assert m.ttm.input_tokens == m.lstm.input_tokens == m.num_tokens


def test_the_default_is_the_cpu_preset_and_one_flag_picks_the_gpu_one(capsys):
    """`ttm-train --dataset X` alone trains preset cpu (the recipe of the results), which is
    also TrainConfig's own defaults; `--preset gpu` starts from the paper-sized model, and
    flags still override it."""
    cpu = parse_args(["--dataset", "d.hdf5"])
    assert cpu == preset("cpu", dataset=Path("d.hdf5")) == TrainConfig(dataset=Path("d.hdf5"))
    assert cpu.model == cpu_model() and cpu.model.dim == 32 and cpu.model.ttm.memory_tokens == 8
    assert (cpu.batch_size, cpu.lr, cpu.crop) == (16, 2e-3, 0.9)
    gpu = parse_args(["--dataset", "d.hdf5", "--preset", "gpu"])
    assert gpu.model == gpu_model() and gpu.model.dim == 128 and gpu.model.ttm.layers == 4
    assert (gpu.batch_size, gpu.lr, gpu.steps) == (64, 3e-4, 20000)
    mixed = parse_args(["--preset=gpu", "--dataset", "d.hdf5", "--steps", "7", "--model.dim", "64"])
    assert (mixed.steps, mixed.model.dim, mixed.batch_size) == (7, 64, 64)
    with pytest.raises(SystemExit) as e:
        parse_args(["--dataset", "d.hdf5", "--preset", "laptop"])
    assert e.value.code == 2 and "choose one of cpu, gpu" in capsys.readouterr().err
