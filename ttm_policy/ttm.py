"""Token Turing Machine (Ryoo et al., CVPR 2023, arXiv 2211.09119) in PyTorch.

Dimensions: B batch, T time steps, N input tokens per step, M memory tokens, R read tokens,
D width.

One step (paper Fig. 2, scenic `TokenTuringMachineUnit`):
    read:    z = summarise_R([memory ‖ inputs] + pos)          (B, R, D)
    process: o = processing_unit(z)                            (B, R, D)
    write:   memory' = summarise_M([memory ‖ o ‖ inputs] + pos) (B, M, D)
The streaming form `step(tokens, memory)` and the sequence form `forward(tokens_seq)` share
this one function, so they agree to float tolerance by construction (and by test).

Where this departs from the official module, it says so next to the code:
- position embeddings are on by default (the official flag `use_positional_embedding`
  defaults to False, the paper describes them); they are factored per segment (memory
  slots, output slots, inputs) so any number of input tokens works;
- the write concatenates [memory ‖ outputs ‖ inputs] (the official code orders
  [memory ‖ inputs ‖ outputs]; with position embeddings the order carries no meaning);
- the add-erase write fixes the official add term (see `summarisers.AddEraseWrite`);
- `write_gate=True` (off by default) adds a GRU-style update gate between the old memory and
  the summariser's write (`summarisers.GatedWrite`), which is not in the paper.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from ttm_policy.processing import MixerUnit, MLPUnit, TransformerUnit
from ttm_policy.state import unroll, where_reset
from ttm_policy.summarisers import (
    AddEraseWrite,
    GatedWrite,
    LinearSummariser,
    PoolSummariser,
    TokenLearner,
    TokenLearnerMHA,
)

Summariser = Literal["tl", "tl-mha", "add-erase", "linear", "pool"]
ProcessingUnit = Literal["transformer", "mixer", "mlp"]


@dataclass
class TTMConfig:
    dim: int = 128
    """D: token width, shared with the tokenizer."""
    memory_tokens: int = 64
    """M: memory size; 64 is the official default."""
    read_tokens: int = 8
    """R: tokens the processing unit sees per step; 8 is the official default."""
    input_tokens: int | None = None
    """N, if fixed: gives each input position its own embedding (needed by `linear`)."""
    summariser: Summariser = "tl"
    """Read/write summariser. `add-erase` reads with `tl` and writes NTM-style (official TL-AddErase)."""
    processing_unit: ProcessingUnit = "transformer"
    """What processes the R read tokens; the official default is a Transformer."""
    layers: int = 4
    """Processing-unit depth; the official encoder passes 4."""
    heads: int = 8
    """Attention heads (official 12; 8 divides the widths we use)."""
    mlp_dim: int = 512
    """Hidden width of the processing unit's MLPs; the official default."""
    bottleneck: int = 64
    """TokenLearner MLP bottleneck; the official default."""
    dropout: float = 0.0
    """Dropout inside the processing unit and summarisers; official default 0."""
    memory_init: Literal["zeros", "learned"] = "zeros"
    """Initial memory: zeros as the official module (see README for the measurement)."""
    memoryless: bool = False
    """Paper ablation: read from the inputs only, keep no memory."""
    position_embeddings: bool = True
    """Learned embeddings that tell memory, output and input tokens apart."""
    write_gate: bool = False
    """Mix the summariser's write into the old memory through a learned update gate (GRU
    style) instead of replacing it, so the memory holds a fact by default. Not with add-erase,
    which gates by itself."""
    write_gate_bias: float = 2.0
    """The gate's initial bias: it starts keeping sigmoid(b) of each slot a step (2: 0.88, a
    fact halves in ~5 steps; 5: 0.993, ~100 steps). Raise it for delays of hundreds of steps,
    so that at initialisation the gradient from a late decision still reaches the cue's steps
    (the chrono initialisation of Tallec & Ollivier, 2018). Only with `write_gate`."""
    write_self_bias: float = 0.0
    """Copy-biased write (not in the paper): a learned (M, M) bias on the write's scores for
    the old memory tokens, starting at this value on the diagonal, so each slot starts by
    copying itself; the position embeddings then steer the scores only, not the written
    values (a slot that copies itself would otherwise add its embedding at every step).
    0 = the official write, whose scores start uniform: measured on SequenceCue it puts
    ~1/M of each slot's weight on itself and averages the slots into one (docs/results.md).
    Only with the `tl` summariser."""

    def __post_init__(self):
        for name in ("dim", "memory_tokens", "read_tokens", "layers", "heads", "mlp_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"TTMConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise ValueError(f"TTMConfig.dim={self.dim} must be divisible by heads={self.heads}")
        if self.summariser == "linear" and self.input_tokens is None:
            raise ValueError(
                "TTMConfig(summariser='linear') needs input_tokens=N (a fixed token count)"
            )
        if self.summariser not in Summariser.__args__:
            raise ValueError(
                f"unknown summariser {self.summariser!r}; choose from {Summariser.__args__}"
            )
        if self.write_self_bias and (self.summariser != "tl" or self.memoryless):
            raise ValueError(
                f"TTMConfig(write_self_bias={self.write_self_bias}) needs the `tl` summariser "
                f"and a memory, got summariser={self.summariser!r}, memoryless={self.memoryless}"
            )
        if self.write_gate_bias != 2.0 and not self.write_gate:
            raise ValueError(
                f"TTMConfig(write_gate_bias={self.write_gate_bias}) sets the gate's start; it "
                "needs write_gate=True (--model.ttm.write-gate)"
            )
        if self.write_gate and self.summariser == "add-erase":
            raise ValueError(
                "TTMConfig(write_gate=True) with summariser='add-erase': add-erase already "
                "gates its write (erase); use one of them"
            )
        if self.processing_unit not in ProcessingUnit.__args__:
            raise ValueError(
                f"unknown processing_unit {self.processing_unit!r}; choose from {ProcessingUnit.__args__}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def _make_summariser(cfg: TTMConfig, num_in: int | None, num_out: int) -> nn.Module:
    kind = "tl" if cfg.summariser == "add-erase" else cfg.summariser
    if kind == "tl":
        return TokenLearner(
            dim=cfg.dim, num_tokens=num_out, bottleneck=cfg.bottleneck, dropout=cfg.dropout
        )
    if kind == "tl-mha":
        return TokenLearnerMHA(dim=cfg.dim, num_tokens=num_out, heads=cfg.heads)
    if kind == "linear":
        return LinearSummariser(num_in=num_in, num_tokens=num_out)
    return PoolSummariser(num_tokens=num_out)


class TokenTuringMachine(nn.Module):
    """A TTM with explicit memory: `step(tokens, memory) -> (out, memory)`."""

    STATE = {"memory": "B, M, D"}  # state name -> axes (ttm_policy.cores); M = 0 memory-less

    def __init__(self, cfg: TTMConfig):
        super().__init__()
        self.cfg = cfg
        D, M, R, N = cfg.dim, cfg.memory_tokens, cfg.read_tokens, cfg.input_tokens
        self.out_tokens = R

        def emb(n: int) -> nn.Parameter:  # BERT-style N(0, 0.02) init, as scenic AddPositionEmbs
            return nn.Parameter(
                torch.randn(n, D) * 0.02 if cfg.position_embeddings else torch.zeros(n, D),
                requires_grad=cfg.position_embeddings,
            )

        # Read: [memory ‖ inputs] -> R tokens. Only parameters the forward uses are created:
        # DDP fails at the second step on one that never gets a gradient (the memory-less
        # variant has no memory to embed; add-erase writes without position embeddings).
        # The default TTM creates the same parameters in the same order as always.
        if not cfg.memoryless:
            self.read_memory_pos = emb(M)
        self.read_input_pos = emb(N or 1)
        M_read = 0 if cfg.memoryless else M  # memory tokens the read sees
        self.read = _make_summariser(cfg, None if N is None else M_read + N, R)

        if cfg.processing_unit == "transformer":
            self.process = TransformerUnit(
                dim=D, layers=cfg.layers, heads=cfg.heads, mlp_dim=cfg.mlp_dim, dropout=cfg.dropout
            )
        elif cfg.processing_unit == "mixer":
            self.process = MixerUnit(
                dim=D, tokens=R, layers=cfg.layers, mlp_dim=cfg.mlp_dim, dropout=cfg.dropout
            )
        else:
            self.process = MLPUnit(
                dim=D, layers=cfg.layers, mlp_dim=cfg.mlp_dim, dropout=cfg.dropout
            )

        # Write: [memory ‖ outputs ‖ inputs] -> M tokens.
        if not cfg.memoryless:
            if cfg.summariser == "add-erase":
                self.write = AddEraseWrite(dim=D, heads=R, bottleneck=cfg.bottleneck)
            else:
                self.write_memory_pos = emb(M)
                self.write_output_pos = emb(R)
                self.write_input_pos = emb(N or 1)
                self.write = _make_summariser(cfg, None if N is None else M + R + N, M)
            if cfg.write_gate:
                self.write_gate = GatedWrite(dim=D, bias=cfg.write_gate_bias)
            if cfg.write_self_bias:  # (M, M): new slot k's score bonus for old slot j
                self.write_bias = nn.Parameter(torch.eye(M) * cfg.write_self_bias)
            if cfg.memory_init == "learned":
                self.memory_init = nn.Parameter(torch.randn(M, D) * 0.02)

    # Checkpoints written before the unused position embeddings were dropped hold them:
    # `read_memory_pos` of shape (0, D) (memory-less) and the `write_*_pos` (add-erase).
    _UNUSED_BEFORE = ("read_memory_pos", "write_memory_pos", "write_output_pos", "write_input_pos")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in self._UNUSED_BEFORE:  # load such checkpoints: drop what we no longer have
            if name not in self._parameters:
                state_dict.pop(prefix + name, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ---------------------------------------------------------------- memory

    @property
    def memory_shape(self) -> tuple[int, int]:
        """(M, D) of one sample's memory; M = 0 for the memory-less variant."""
        return (0 if self.cfg.memoryless else self.cfg.memory_tokens, self.cfg.dim)

    def init_memory(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        """The memory every episode starts from: (B, M, D)."""
        ref = self.read_input_pos
        device = device or ref.device
        dtype = dtype or ref.dtype
        if self.cfg.memoryless or self.cfg.memory_init == "zeros":
            return torch.zeros(batch_size, *self.memory_shape, device=device, dtype=dtype)
        return self.memory_init.to(device=device, dtype=dtype).expand(batch_size, -1, -1).clone()

    def reset_memory(self, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Samples where mask (B,) is True start a new episode: their memory becomes initial."""
        return where_reset(
            mask, self.init_memory(memory.shape[0], memory.device, memory.dtype), memory
        )

    # ---------------------------------------------------------------- one step

    def _check(self, tokens: torch.Tensor, memory: torch.Tensor) -> None:
        D, N = self.cfg.dim, self.cfg.input_tokens
        if tokens.ndim != 3 or tokens.shape[-1] != D or (N is not None and tokens.shape[1] != N):
            raise ValueError(
                f"tokens must have shape (B, {N or 'N'}, {D}), got {tuple(tokens.shape)}"
            )
        expected = (tokens.shape[0], *self.memory_shape)
        if tuple(memory.shape) != expected:
            raise ValueError(
                f"memory must have shape {expected} (B, M, D), got {tuple(memory.shape)}"
            )

    def step_with_weights(
        self, tokens: torch.Tensor, memory: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor | None]]:
        """One step, also returning the read/write summariser weights for introspection.

        tokens (B, N, D), memory (B, M, D) -> out (B, R, D), memory (B, M, D), weights with
        `read` (B, R, M+N) and `write` (B, M, M+R+N) (or (B, R, M) selections for add-erase),
        and with `write_gate` also `keep` (B, M, D), the gate's share of the old memory.
        """
        self._check(tokens, memory)
        N = tokens.shape[1]
        inp_read = (
            tokens + self.read_input_pos[:N]
            if self.cfg.input_tokens
            else tokens + self.read_input_pos
        )
        if self.cfg.memoryless:
            read_in = inp_read  # (B, N, D)
        else:
            read_in = torch.cat([memory + self.read_memory_pos, inp_read], dim=1)  # (B, M+N, D)
        z, read_w = self.read(read_in)  # (B, R, D)
        out = self.process(z)  # (B, R, D)
        if self.cfg.memoryless:
            return out, memory, {"read": read_w, "write": None}
        # The write runs outside autocast, in the memory's dtype (the parameters' float32):
        # under bf16 autocast its weighted sum would come out of a bf16 matmul, so the memory
        # would be rounded at every step of a 150-300-step unroll while float32 inference
        # never rounds it. The read and the processing unit (most of the work) stay under
        # autocast. tests/ttm_policy/test_precision.py measures what remains.
        with torch.autocast(memory.device.type, enabled=False):
            out_w = out.to(memory.dtype)  # (B, R, D)
            if self.cfg.summariser == "add-erase":
                new_memory, write_w = self.write(memory, out_w)  # (B, M, D)
            else:
                inp_write = tokens.to(memory.dtype) + (
                    self.write_input_pos[:N] if self.cfg.input_tokens else self.write_input_pos
                )
                write_in = torch.cat(
                    [memory + self.write_memory_pos, out_w + self.write_output_pos, inp_write],
                    dim=1,
                )  # (B, M+R+N, D)
                if self.cfg.write_self_bias:  # scores from write_in, values without positions
                    values = torch.cat([memory, out_w, tokens.to(memory.dtype)], dim=1)
                    bias = nn.functional.pad(
                        self.write_bias, (0, values.shape[1] - memory.shape[1])
                    )
                    new_memory, write_w = self.write(write_in, values=values, bias=bias)
                else:
                    new_memory, write_w = self.write(write_in)  # (B, M, D)
                if self.cfg.write_gate:
                    new_memory, keep = self.write_gate.mix(memory, new_memory)  # (B, M, D) each
                    return out, new_memory, {"read": read_w, "write": write_w, "keep": keep}
        return out, new_memory, {"read": read_w, "write": write_w}

    def step(self, tokens: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Streaming form: tokens (B, N, D), memory (B, M, D) -> out (B, R, D), memory (B, M, D)."""
        out, memory, _ = self.step_with_weights(tokens, memory)
        return out, memory

    # ---------------------------------------------------------------- sequence

    def forward(
        self,
        tokens: torch.Tensor,
        memory: torch.Tensor | None = None,
        reset: torch.Tensor | None = None,
        bptt: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequence form: tokens (B, T, N, D) -> outs (B, T, R, D), final memory (B, M, D).

        reset (B, T) bool: where True, memory returns to `init_memory` before that step (an
        episode starts inside the window). bptt: cut gradients through memory every `bptt`
        steps (truncated back-propagation through time).
        """
        if tokens.ndim != 4:
            raise ValueError(f"tokens must have shape (B, T, N, D), got {tuple(tokens.shape)}")
        B, T = tokens.shape[:2]
        # The state takes the parameters' dtype, not that of autocast's lower-precision tokens.
        memory = self.init_memory(B, tokens.device) if memory is None else memory
        if reset is not None and tuple(reset.shape) != (B, T):
            raise ValueError(f"reset must have shape (B, T) = {(B, T)}, got {tuple(reset.shape)}")
        return unroll(self.step, tokens, memory, self.reset_memory, reset, bptt)  # (B, T, R, D)
