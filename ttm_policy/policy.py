"""TTMPolicy: the policy wrapper around the network (`ttm_policy.network`), with its
normalisation, observation checks, control-loop state and checkpoints.

Dimensions: B batch (envs at inference), T time steps, N tokens per step, R the core's
output tokens, D width, K action horizon (chunk length), A action width (7), H, W image
size, Dl a low-dim key's width.

    obs (raw) -normalise low-dim-> net: tokens -> core -> head -> chunks (normalised)
            -un-normalise, clip-> actions (B, T, K, A); the network is `PolicyNetwork`
    (ttm_policy/network.py), the temporal core one of `ttm_policy.cores.CORES`.

The wrapper owns: `normalize_obs` and the action un-normalisation (statistics in
`self.normalizer`, saved in the weights); the training loss (`forward(batch)`); observation
checks, the recurrent state, the action queue / ensemble and `reset()` for control
(`select_action`); `step(obs, state)`, the pure control step that `ttm-export` traces; and
checkpoints (`save_pretrained` / `from_pretrained`, files written by ttm_policy.checkpoint).

Normalisation (stored in the weights, from `compute_stats` of the training split):
- low-dim observations: per dimension, [min, max] -> [-1, 1] where max - min > 1e-6; a
  dimension constant in the training data (range <= 1e-6) is only centred (x - min), so it
  gives 0 there and changes at its raw scale elsewhere (a clamped std would blow it up by
  1e6). Min/max rather than mean/std: bounded token inputs, and the same rule as actions.
- actions: per dimension, [min, max] -> [-1, 1] where the range > 1e-6; a constant dimension
  passes through unchanged. `select_action` un-normalises and clips to [-1, 1] (the env's
  bounds).
- images: uint8 -> [-1, 1] inside the tokenizer; no statistics.

Action chunks (`action_horizon` K > 1, ACT): the head predicts the K actions from each step
on. At inference the core is stepped on EVERY control step, whatever `chunk_execution` says,
so a memory core sees every frame; `queue` then executes a chunk's K actions one by one and
uses the head's prediction only when the queue runs empty (re-plan every K steps);
`ensemble` averages, for the current step, the predictions of the last K chunks with ACT's
exponential weights w_i = exp(-m i), i = 0 for the oldest chunk.

Multi-task policies (`PolicyConfig.tasks`, the vocabulary, non-empty) take the task they are
doing, by name or index: `batch["task"]` (B,) in training (train/data.py), `select_action(obs,
task=...)` or `set_task(task)` once for the episodes that follow, and a (B,) int64 tensor in
`step` (the exported graph's `task` input). The network conditions its tokens on it
(`ttm_policy.network.TaskFiLM`). A single-task policy takes no task.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ttm_policy import checkpoint
from ttm_policy.checkpoint import WEIGHTS_NAME
from ttm_policy.config import LIFT_OBS_KEYS, Core, Head, PolicyConfig, is_image_key
from ttm_policy.heads import masked_mean
from ttm_policy.network import PolicyNetwork, _crop
from ttm_policy.normalize import RANGE_EPS, Normalizer, Range, lowdim_dims_from
from ttm_policy.state import detach as detach_state

__all__ = [  # the names other modules import from here
    "LIFT_OBS_KEYS",
    "RANGE_EPS",
    "Core",
    "Head",
    "Normalizer",
    "PolicyConfig",
    "Range",
    "TTMPolicy",
    "_crop",
    "is_image_key",
    "upgrade_state_dict",
]

_OWN = ("net.", "normalizer.")


def upgrade_state_dict(weights: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Weights saved before the network was its own module (`cameras.*`, `core.*`, ...) get
    their keys under `net.`; current weights are returned as they are. In place."""
    for key in [k for k in weights if k.startswith(prefix)]:
        rest = key[len(prefix) :]
        if not rest.startswith(_OWN):
            weights[prefix + "net." + rest] = weights.pop(key)
    return weights


def _upgrade_keys(module, state_dict, prefix, *args) -> None:
    upgrade_state_dict(state_dict, prefix)


class TTMPolicy(nn.Module):
    """A visuomotor policy: `forward(batch) -> (loss, metrics)` for training;
    `reset()` + `select_action(obs) -> action` for control; `save_pretrained` /
    `from_pretrained` for checkpoints (config.json + model.safetensors).

    It wraps the pure network (`self.net`, `ttm_policy.network.PolicyNetwork`) and owns what
    is not the network: the normalisation statistics, observation checks, the recurrent state
    and action queue between control steps, `reset()`, and checkpoints."""

    def __init__(self, cfg: PolicyConfig, stats: dict[str, Any] | None = None):
        """stats: `compute_stats(train_demos)` (`obs/<key>/min|max`, `action/min|max`, ...);
        None only when weights that hold them are loaded next (`from_pretrained`)."""
        super().__init__()
        cfg = replace(cfg, lowdim_dims=lowdim_dims_from(cfg, stats))
        self.cfg = cfg
        self.net = PolicyNetwork(cfg)
        self.normalizer = Normalizer(lowdim_dims=cfg.lowdim_dims, action_dim=cfg.action_dim)
        if stats is not None:
            self.normalizer.load_stats(stats)
        self._register_load_state_dict_pre_hook(_upgrade_keys, with_module=True)
        self._task: int | None = None  # multi-task: the task select_action runs (set_task)
        self.reset()

    @property
    def device(self) -> torch.device:
        return self.net.source_embedding.device

    @property
    def core(self) -> nn.Module:
        """The temporal core (`ttm_policy.cores`)."""
        return self.net.core

    @property
    def head(self) -> nn.Module:
        """The action head."""
        return self.net.head

    # ------------------------------------------------------------------ shared path

    def normalize_obs(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """obs key -> (B, T, ...) as the env gives it -> the network's input: images as they
        are (uint8), low-dim values float32 and normalised with the training statistics."""
        cfg, out = self.cfg, dict(obs)
        for key, r in self.normalizer.obs.items():
            if key not in obs:
                continue  # the network names what is missing
            x, want = obs[key], cfg.lowdim_dims[key]
            if x.ndim != 3 or x.shape[-1] != want:
                raise ValueError(
                    f"obs[{key!r}] must have shape (B, T, {want}), got {tuple(x.shape)}"
                )
            out[key] = r.normalize(x.to(self.device, torch.float32))  # (B, T, Dl)
        return out

    def encode(
        self, obs: dict[str, torch.Tensor], *, random_crop: bool, task: Any = None
    ) -> torch.Tensor:
        """obs: key -> (B, T, H, W, 3) uint8 | (B, T, Dl) raw, the task (multi-task: see
        `task_tensor`) -> tokens (B, T, N, D)."""
        obs = self.normalize_obs(obs)
        B = next(iter(obs.values())).shape[0]
        return self.net.encode(obs, random_crop=random_crop, task=self.task_tensor(task, B))

    # ------------------------------------------------------------------ tasks

    @property
    def tasks(self) -> tuple[str, ...]:
        """The task vocabulary (empty for a single-task policy)."""
        return self.cfg.tasks

    def task_tensor(self, task: Any, batch: int) -> torch.Tensor | None:
        """The task as the network takes it: None for a single-task policy (which refuses a
        task); otherwise (B,) int64 from a name or index (every row), or one per row (a
        sequence or tensor of B names or indices). ValueError naming the vocabulary."""
        if not self.cfg.tasks:
            if task is not None:
                self.cfg.task_index(task)  # raises: this policy takes no task
            return None
        if task is None:
            self.net.check_task(None, batch)  # raises, naming the tasks
        if isinstance(task, (str, int, np.integer)):
            task = [task] * batch
        if torch.is_tensor(task):
            if task.is_floating_point() or task.dtype == torch.bool:
                raise ValueError(f"task tensor must hold integer indices, got {task.dtype}")
            task = task.reshape(-1).tolist()
        task = list(np.asarray(task, dtype=object).reshape(-1))
        if len(task) != batch:
            raise ValueError(f"{len(task)} tasks for a batch of {batch}: give one, or one per row")
        ids = [self.cfg.task_index(t) for t in task]
        return torch.tensor(ids, dtype=torch.long, device=self.device)  # (B,)

    def set_task(self, task: str | int | None) -> None:
        """The task `select_action` runs when it is given none (a rollout loop that knows
        nothing of tasks, e.g. `ttm-eval`'s): a name or index of the vocabulary; None: no
        default. Kept across `reset()`."""
        self._task = None if task is None else self.cfg.task_index(task)

    def features(self, out: torch.Tensor) -> torch.Tensor:
        """Core outputs (..., R, D) -> head input (..., R*D) or (..., D)."""
        return self.net.features(out)

    # ------------------------------------------------------------------ training

    def targets(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised targets (B, T, K, A) and their validity (B, T, K) from the batch."""
        cfg = self.cfg
        a = batch["actions"].to(self.device, torch.float32)
        K, A = cfg.action_horizon, cfg.action_dim
        mask = batch.get("mask")
        if a.ndim == 3 and K == 1:
            a = a.unsqueeze(2)  # (B, T, 1, A)
        if a.ndim != 4 or tuple(a.shape[2:]) != (K, A):
            raise ValueError(
                f"batch['actions'] must have shape (B, T, {K}, {A})"
                + (f" or (B, T, {A})" if K == 1 else "")
                + f" for action_horizon={K}, got {tuple(a.shape)} "
                "(make the dataset with the same action_horizon)"
            )
        B, T = a.shape[:2]
        valid = torch.ones(B, T, K, dtype=torch.bool, device=self.device)
        if mask is not None:
            valid &= mask.to(self.device, torch.bool)[:, :, None]
        if "action_mask" in batch and a.shape[2] == batch["action_mask"].shape[-1]:
            valid &= batch["action_mask"].to(self.device, torch.bool).view(B, T, K)
        return self.normalizer.action.normalize(a), valid

    def sequence_features(
        self, batch: dict[str, Any], memory: Any = None
    ) -> tuple[torch.Tensor, Any]:
        """The training forward up to the head input: (features (B, T, F), the core's state
        after the last step). The core is unrolled over the batch's T steps, reset where
        `is_first`. With `memory` None every row starts an episode at t = 0 (whole episodes);
        otherwise `memory` is the state the rows were left in by their previous piece of the
        same episodes (`train.data.EpisodeStreams`: a row that starts a new episode has
        `is_first[0]`), as a rollout carries it. So no reset happens that a rollout would not
        make; `bptt` cuts gradients, not the memory. Random crops in train mode, central in
        eval mode, where each step's output equals `select_action`'s."""
        obs = {k: batch["obs"][k].to(self.device) for k in self.cfg.obs_keys if k in batch["obs"]}
        B, T = next(iter(obs.values())).shape[:2]
        task = self.task_tensor(batch.get("task"), B)  # (B,) multi-task, else None
        reset = torch.zeros(B, T, dtype=torch.bool, device=self.device)
        if "is_first" in batch:
            reset |= batch["is_first"].to(self.device, torch.bool)
        if memory is None:
            reset[:, 0] = True
        return self.net(
            self.normalize_obs(obs),
            reset,
            random_crop=self.training,
            bptt=self.cfg.bptt,
            memory=memory,
            task=task,
        )

    def forward(
        self, batch: dict[str, Any], memory: Any = None, *, return_memory: bool = False
    ) -> tuple[torch.Tensor, dict[str, float]] | tuple[torch.Tensor, dict[str, float], Any]:
        """Training loss on a batch in the data layer's layout (see train/data.py): obs,
        actions, mask, is_first (`sequence_features` from `memory`, then the head's loss).
        Returns (loss, metrics) with `losses/...` and `metrics/...` keys, and the core's state
        after the batch's last step (detached) when `return_memory`."""
        target, valid = self.targets(batch)
        feats, state = self.sequence_features(batch, memory)  # (B, T, F)
        params = self.head(feats)
        loss, parts = self.head.loss(params, target, valid)
        if self.net.aux_head is not None:
            parts["aux_final"] = self._aux_loss(feats, batch, valid[..., 0])
            loss = loss + self.cfg.aux_weight * parts["aux_final"]
        with torch.no_grad():
            pred = self.head.predict(params)  # (B, T, K, A)
            l1 = masked_mean((pred - target).abs().mean(-1), valid)
        metrics = {"losses/total": loss.item()}
        metrics.update({f"losses/{k}": v.item() for k, v in parts.items()})
        metrics["metrics/action_l1_normalised"] = l1.item()
        metrics["metrics/valid_steps"] = float(valid[..., 0].sum().item())
        if return_memory:
            return loss, metrics, detach_state(state)
        return loss, metrics

    def _aux_loss(self, feats: torch.Tensor, batch: dict[str, Any], valid: torch.Tensor):
        """L1 between the predicted and the true normalised final values, over valid steps."""
        final = batch.get("final")
        missing = [k for k in self.cfg.aux_final_keys if final is None or k not in final]
        if missing:
            raise KeyError(
                f"aux_final_keys {missing} need batch['final'][key] (B, Dl), the episode's last "
                "value; the datasets of train/data.py provide it"
            )
        norm = self.normalizer.obs
        target = torch.cat(
            [
                norm[k].normalize(final[k].to(self.device, torch.float32))
                for k in self.cfg.aux_final_keys
            ],
            dim=-1,
        )  # (B, Daux)
        err = (self.net.aux_head(feats) - target[:, None]).abs().mean(-1)  # (B, T)
        return masked_mean(err, valid)

    @torch.no_grad()
    def predict_chunks(
        self, obs: dict[str, torch.Tensor], is_first: torch.Tensor | None = None, task: Any = None
    ) -> torch.Tensor:
        """Sequence form of inference: obs key -> (B, T, ...) (and the task of a multi-task
        policy, see `task_tensor`) -> the chunks every step predicts, un-normalised and
        clipped, (B, T, K, A). Central crop, most likely action; memory reset at t = 0 and
        where `is_first` (B, T): the training forward in eval mode (`sequence_features`). No
        queue / ensembling."""
        batch = {"obs": obs} if is_first is None else {"obs": obs, "is_first": is_first}
        if task is not None:
            batch["task"] = task
        was_training = self.training
        self.eval()
        try:
            feats, _ = self.sequence_features(batch)  # (B, T, F), central crops
            chunks = self.head.predict(self.head(feats))  # (B, T, K, A)
        finally:
            self.train(was_training)
        return self.normalizer.action.unnormalize(chunks).clamp(-1.0, 1.0)

    # ------------------------------------------------------------------ control

    def reset(self, mask: np.ndarray | torch.Tensor | None = None) -> None:
        """Start new episodes: all (mask None), or the envs where mask (B,) is True."""
        if mask is None or self._state is None:
            self._state = None  # created at the next select_action, for its batch size
            self._queue = self._queue_pos = self._ens = self._ens_valid = None
            return
        m = torch.as_tensor(np.asarray(mask), dtype=torch.bool, device=self.device).reshape(-1)
        if m.numel() != self._queue_pos.numel():
            raise ValueError(
                f"reset mask has {m.numel()} entries, but the policy runs {self._queue_pos.numel()} envs"
            )
        self._state = self.core.reset_memory(self._state, m)
        self._queue_pos[m] = self.cfg.action_horizon  # empty queue
        self._ens_valid[m] = False

    def _obs_tensors(self, obs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], bool]:
        """One step's env dict -> key: (B, ...) tensors; True if obs had no batch dim."""
        cfg = self.cfg
        missing = [k for k in cfg.obs_keys if k not in obs]
        if missing:
            raise KeyError(f"observation lacks keys {missing}; it holds {sorted(obs)}")
        out, single = {}, None
        for k in cfg.obs_keys:
            x = np.asarray(obs[k])
            base = 3 if is_image_key(k) else 1  # ndim of one unbatched observation
            if x.ndim not in (base, base + 1):
                want = (
                    f"({cfg.image_size}, {cfg.image_size}, 3)"
                    if base == 3
                    else f"({cfg.lowdim_dims[k]},)"
                )
                raise ValueError(
                    f"obs[{k!r}] must have shape {want} or (B, *{want}), got {x.shape}"
                )
            s = x.ndim == base
            if single is not None and s != single:
                raise ValueError(f"obs[{k!r}] shape {x.shape}: mixes batched and unbatched keys")
            single = s
            if is_image_key(k):
                if x.dtype != np.uint8:
                    raise ValueError(f"obs[{k!r}] must be uint8 images, got dtype {x.dtype}")
            else:
                if x.shape[-1] != cfg.lowdim_dims[k]:
                    raise ValueError(
                        f"obs[{k!r}] has width {x.shape[-1]}, expected {cfg.lowdim_dims[k]}"
                    )
                if x.dtype.kind not in "fiu":
                    raise ValueError(f"obs[{k!r}] must be numeric, got dtype {x.dtype}")
                with np.errstate(over="ignore"):  # an overflow becomes inf: refused below
                    x = x.astype(np.float32)
                if not np.isfinite(x).all():  # NaN/inf must never reach the memory
                    bad = np.argwhere(~np.isfinite(x)).tolist()
                    raise ValueError(
                        f"obs[{k!r}] has non-finite values at {bad[:8]}; the policy state is "
                        "left as it was"
                    )
            t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
            out[k] = t[None] if s else t  # (B, ...)
        return out, bool(single)

    def _execute(self, chunk: torch.Tensor) -> torch.Tensor:
        """chunk (B, K, A) predicted at this step (un-normalised, clipped) -> the action to
        run now (B, A)."""
        B, K, _ = chunk.shape
        if self.cfg.chunk_execution == "queue":
            refill = self._queue_pos >= K  # (B,)
            self._queue[refill] = chunk[refill]
            self._queue_pos[refill] = 0
            action = self._queue[torch.arange(B, device=chunk.device), self._queue_pos]  # (B, A)
            self._queue_pos += 1
            return action
        # Ensemble: slot j holds the chunk made j steps ago; its entry j is for now.
        self._ens = torch.cat([chunk[:, None], self._ens[:, :-1]], dim=1)  # (B, K, K, A)
        self._ens_valid = torch.cat(
            [torch.ones_like(self._ens_valid[:, :1]), self._ens_valid[:, :-1]], dim=1
        )  # (B, K)
        j = torch.arange(K, device=chunk.device)
        cand = self._ens[:, j, j]  # (B, K, A) predictions for this step, newest first
        n = self._ens_valid.sum(1, keepdim=True)  # (B, 1) chunks made since the reset
        age_rank = (n - 1 - j).clamp_min(0).to(chunk.dtype)  # (B, K) 0 = oldest valid chunk
        w = torch.exp(-self.cfg.ensemble_decay * age_rank) * self._ens_valid  # (B, K)
        return (w[..., None] * cand).sum(1) / w.sum(1, keepdim=True)  # (B, A)

    def init_state(self, batch_size: int):
        """The core's state at an episode start, for `batch_size` envs (see `step`)."""
        return self.core.init_memory(batch_size, device=self.device)

    def step(
        self,
        obs: dict[str, torch.Tensor],
        state,
        task: Any = None,
        *,
        sample: bool | None = None,
        gripper_probability: bool = False,
    ) -> tuple[Any, ...]:
        """Streaming form of one control step with explicit state (what an exporter traces):
        obs key -> one step's tensors, images uint8 (B, H, W, 3), low-dim (B, Dl); state from
        `init_state(B)` or the previous step; a multi-task policy's task, (B,) int64 indices
        (a tensor is used as it is: the exported graph's input) or a name / index (see
        `task_tensor`) -> (chunk (B, K, A) un-normalised and clipped to [-1, 1], new state).
        Central crop; the most likely action unless `sample` (default: `sample_actions`).
        `gripper_probability`: also a binary gripper's probability of "close" (B, K) (None
        without one), as the export's graph outputs it. No queue or ensembling (that is
        `select_action`'s job); call under no_grad / eval."""
        x = {k: v.unsqueeze(1) for k, v in obs.items()}  # (B, 1, ...)
        x = {k: v[:, 0] for k, v in self.normalize_obs(x).items()}  # (B, ...)
        if task is not None and not torch.is_tensor(task):
            task = self.task_tensor(task, next(iter(x.values())).shape[0])
        chunk, state, *prob = self.net.step(
            x, state, task, sample=sample, gripper_probability=gripper_probability
        )  # (B, K, A) normalised
        chunk = self.normalizer.action.unnormalize(chunk).clamp(-1.0, 1.0)  # (B, K, A)
        return (chunk, state, *prob)

    @torch.no_grad()
    def select_action(self, obs: dict[str, Any], task: Any = None) -> np.ndarray:
        """One control step: the env's obs dict (images uint8 (H, W, 3), low-dim (Dl,); or
        all with a leading env dim B) -> action float32 (A,) (or (B, A)) in [-1, 1].

        Runs in eval mode (central crop, no dropout) under no_grad and keeps the recurrent
        state and the action queue in the policy between calls; `reset()` at episode starts.
        A multi-task policy runs `task` (a name or index, or one per env), else the task of
        `set_task`; a single-task policy takes none.
        """
        was_training = self.training
        self.eval()
        try:
            x, single = self._obs_tensors(obs)
            B = next(iter(x.values())).shape[0]
            task = self.task_tensor(task if task is not None else self._task, B)
            if self._state is None:
                K, A = self.cfg.action_horizon, self.cfg.action_dim
                self._state = self.init_state(B)
                self._queue = torch.zeros(B, K, A, device=self.device)
                self._queue_pos = torch.full((B,), K, dtype=torch.long, device=self.device)
                self._ens = torch.zeros(B, K, K, A, device=self.device)
                self._ens_valid = torch.zeros(B, K, dtype=torch.bool, device=self.device)
            elif self._queue_pos.numel() != B:
                raise ValueError(
                    f"the policy runs {self._queue_pos.numel()} envs but obs has batch {B}: "
                    "call reset() before changing the number of envs"
                )
            chunk, state = self.step(x, self._state, task)  # (B, K, A)
            if not torch.isfinite(chunk).all():  # e.g. diverged weights: nothing is committed
                raise FloatingPointError(
                    "the policy produced a non-finite action; its state is left as it was "
                    "(check the checkpoint's weights)"
                )
            self._state = state
            action = self._execute(chunk)  # (B, A)
        finally:
            self.train(was_training)
        a = action.float().cpu().numpy()  # (B, A)
        return a[0] if single else a

    # ------------------------------------------------------------------ checkpoints

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `config.json` + `model.safetensors` (weights and stats) atomically."""
        return checkpoint.save_pretrained(self, directory)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str | torch.device = "cpu"
    ) -> TTMPolicy:
        """Rebuild from a directory written by `save_pretrained` (config.json +
        model.safetensors), in eval mode on `device`."""
        cfg = checkpoint.load_config(directory)
        weights = upgrade_state_dict(checkpoint.load_weights(directory))
        policy = cls(cfg)
        checkpoint.check_weights(Path(directory) / WEIGHTS_NAME, weights, policy.state_dict())
        policy.load_state_dict(weights, strict=True)
        return policy.to(device).eval()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
