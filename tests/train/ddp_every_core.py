"""Two DDP training steps of every core and TTM summariser, in one process group.

Run by tests/train/test_train.py under `torchrun --nproc-per-node 2` (gloo on CPU):

    python -m torch.distributed.run --nproc-per-node 2 tests/train/ddp_every_core.py DATA OUT

Each configuration is a tiny TTMPolicy wrapped in DDP as `train.train` wraps it (no
`find_unused_parameters`), trained for two steps on each rank's slice of real batches: DDP
raises "Expected to have finished reduction" at the second step when a parameter gets no
gradient. One process group for all of them (a group cannot be re-created in a process), so
this costs one torchrun start. Rank 0 writes OUT, a JSON object: configuration name ->
{"checksums": [per rank]} or {"error": the first line of what was raised}.
"""

from __future__ import annotations

import gc
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from train.data import DataConfig, StepBatchSampler, compute_stats, load_demos, make_dataset
from train.train import infer_obs_keys
from ttm_policy import PolicyConfig, TTMPolicy
from ttm_policy.cores import CORES

SUMMARISERS = ("tl-mha", "add-erase", "linear", "pool")  # "tl" is the default `ttm`
CONFIGS = {core: (core, None) for core in CORES} | {f"ttm/{s}": ("ttm", s) for s in SUMMARISERS}
STEPS, PER_RANK = 2, 2


def tiny(core: str, summariser: str | None, obs_keys, image_size: int) -> PolicyConfig:
    cfg = PolicyConfig(
        obs_keys=obs_keys,
        image_size=image_size,
        crop_size=image_size,
        core=core,
        dim=32,
        tokens_per_camera=2,
        conv_channels=(8, 8, 8, 8),
        head_hidden=32,
    )
    ttm = {"layers": 1, "memory_tokens": 4, "read_tokens": 2, "mlp_dim": 32, "bottleneck": 8}
    if summariser:
        ttm["summariser"] = summariser
    return replace(
        cfg,
        ttm=replace(cfg.ttm, **ttm),
        lstm=replace(cfg.lstm, hidden=16, layers=1),
        transformer=replace(cfg.transformer, layers=1, mlp_dim=32),
    )


def main(data: Path, out: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    obs_keys = infer_obs_keys(data)
    demos = load_demos(str(data), obs_keys, "train")
    image_size = next(demos.obs_shapes[k][0] for k in obs_keys if k.endswith("_image"))
    data_cfg = DataConfig(path=str(data), obs_keys=obs_keys)
    dataset = make_dataset(data_cfg, demos)
    sampler = StepBatchSampler(len(dataset), PER_RANK, rank=rank, world_size=world, seed=0)
    batches = [
        torch.utils.data.default_collate([dataset[j] for j in sampler.batch(i)])
        for i in range(STEPS)
    ]
    results = {}
    for name, (core, summariser) in CONFIGS.items():
        torch.manual_seed(0)  # the same initial weights on both ranks (DDP also broadcasts)
        policy = TTMPolicy(tiny(core, summariser, obs_keys, image_size), compute_stats(demos))
        model = DistributedDataParallel(policy)
        opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
        try:
            for batch in batches:
                loss, _ = model(batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            mine = float(sum(p.detach().double().sum() for p in policy.parameters()))
        except RuntimeError as e:  # raised on every rank alike, before any collective
            mine = str(e).strip().splitlines()[0]
        every = [None] * world
        dist.all_gather_object(every, mine)
        error = next((x for x in every if not isinstance(x, float)), None)
        results[name] = {"checksums": every} if error is None else {"error": error}
        del model
        gc.collect()
    dist.barrier()
    if rank == 0:
        out.write_text(json.dumps(results, indent=2) + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
