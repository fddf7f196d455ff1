"""The training recipe, by name: what `ttm-train --dataset X` trains with no other flag.

    ttm-train --dataset demos.hdf5                  # preset `cpu`: the recipe of docs/results.md
    ttm-train --dataset demos.hdf5 --preset gpu     # the paper-sized model, for one GPU
    ttm-train --dataset demos.hdf5 --steps 500      # any flag overrides the preset's value

Both presets train the same way (every batch row reads an episode from its first step in
64-step pieces with its memory carried from piece to piece, so the memory a policy carries at
step t in training is the memory it carries at step t of a rollout; observations: every
camera in the file and the robot's proprioception, no simulator object state; a gripper
column of the actions, when the demonstrations have one, is an open/close output trained by
cross-entropy and drawn from its probability at inference, `--model.binary-gripper` and
`--model.sample-actions`: docs/results.md, PickPlaceCan); they differ in size and budget:

- `cpu` (default): sized for 2 CPU cores, the budget of docs/results.md. D=32, 4 tokens per
  camera, a small conv tokenizer, TTM M=8 memory tokens, R=4 read, one layer; baselines at
  the same scale (LSTM and GRU 2 x 64, Transformer window 6 and one layer); batch 16 rows,
  AdamW 2e-3 with cosine decay.
- `gpu`: the official TTM sizes (D=128, M=64, R=8, 4 layers, 8 tokens per camera), robomimic's
  BC-RNN LSTM (2 x 400), batch 64 rows, AdamW 3e-4, 20k steps. Not measured here (no
  GPU on the machine the results come from): a starting point, not a result.

`TrainConfig()`'s own defaults are the `cpu` preset (a test checks it), so the Python API and
the command line train the same recipe.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

PRESETS = ("cpu", "gpu")
DEFAULT_PRESET = "cpu"


def cpu_model() -> Any:
    """The `cpu` preset's PolicyConfig (obs_keys, image and crop size come from the data)."""
    from ttm_policy import CausalTransformerConfig, GRUConfig, LSTMConfig, PolicyConfig, TTMConfig

    return PolicyConfig(
        dim=32,
        tokens_per_camera=4,
        conv_channels=(8, 8, 16, 16),
        head_hidden=64,
        ttm=TTMConfig(memory_tokens=8, read_tokens=4, layers=1, heads=4, mlp_dim=64, bottleneck=32),
        lstm=LSTMConfig(hidden=64, layers=2),
        gru=GRUConfig(hidden=64, layers=2),
        transformer=CausalTransformerConfig(window=6, layers=1, heads=4, mlp_dim=64),
        sample_actions=True,  # the binary gripper's open/close drawn from its probability
    )


def gpu_model() -> Any:
    """The `gpu` preset's PolicyConfig: the library's defaults (the paper's TTM sizes)."""
    from ttm_policy import PolicyConfig

    return PolicyConfig(sample_actions=True)  # as `cpu`: the binary gripper sampled


def preset(name: str, **fields: Any) -> Any:
    """TrainConfig of preset `name` with `fields` set (e.g. dataset=...); ValueError for an
    unknown name."""
    import tyro

    from train.config import TrainConfig

    if name not in PRESETS:
        raise ValueError(f"--preset {name!r}: choose one of {', '.join(PRESETS)}")
    base = TrainConfig(dataset=fields.pop("dataset", tyro.MISSING))
    if name == "gpu":
        base = replace(
            base, model=gpu_model(), batch_size=64, lr=3e-4, warmup=500, steps=20000,
            save_every=2000, valid_every=2000, threads=None,
        )  # fmt: skip
    return replace(base, **fields)


def split_preset(argv: list[str]) -> tuple[str, list[str]]:
    """(`--preset NAME` or the default, the other arguments); `--preset=NAME` works too."""
    rest, name, i = [], DEFAULT_PRESET, 0
    while i < len(argv):
        a = argv[i]
        if a == "--preset":
            if i + 1 >= len(argv):
                raise ValueError(f"--preset needs a name: {', '.join(PRESETS)}")
            name, i = argv[i + 1], i + 2
            continue
        if a.startswith("--preset="):
            name = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    if name not in PRESETS:
        raise ValueError(f"--preset {name!r}: choose one of {', '.join(PRESETS)}")
    return name, rest
