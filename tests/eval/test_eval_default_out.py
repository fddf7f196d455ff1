"""ttm-eval without --out: each checkpoint of a run gets its own directory, so evaluating
`checkpoints/best` and `checkpoints/last` keeps both results."""

import json
import shutil

from envs.collect import Args, collect
from eval.evaluate import main
from train.train import TrainConfig, train


def test_best_and_last_do_not_overwrite_each_other(tmp_path):
    collect(Args(task="PointCue", out=tmp_path / "d.hdf5", episodes=2, seed=0, image_size=32))
    cfg = TrainConfig(dataset=tmp_path / "d.hdf5", out=tmp_path / "run", steps=1, batch_size=2)
    cfg.model.dim, cfg.model.ttm.layers, cfg.model.ttm.memory_tokens = 32, 1, 8
    cfg.model.conv_channels, cfg.model.head_hidden = (8, 8, 16, 16), 32
    train(cfg)
    ckpts = tmp_path / "run" / "checkpoints"
    shutil.copytree(ckpts / "last", ckpts / "best")
    for name, steps in (("best", 3), ("last", 4)):
        main(["--checkpoint", str(ckpts / name), "--episodes", "1", "--max-steps", str(steps)])
    for name, steps in (("best", 3), ("last", 4)):
        ev = json.loads((tmp_path / "run" / "eval" / name / "eval.json").read_text())
        assert ev["checkpoint"] == str(ckpts / name) and ev["lengths"] == [steps]
    # A checkpoint directory outside a run's checkpoints/ keeps its results inside it.
    alone = tmp_path / "exported_policy"
    shutil.copytree(ckpts / "last", alone)
    main(["--checkpoint", str(alone), "--episodes", "1", "--max-steps", "2"])
    assert json.loads((alone / "eval" / "eval.json").read_text())["lengths"] == [2]
