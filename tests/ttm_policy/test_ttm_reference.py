"""The TTM's step against an independent reference of the paper's equations.

Ryoo et al., "Token Turing Machines" (CVPR 2023, arXiv 2211.09119), one step t:
    read:    Z_t     = S_R([M_t ‖ I_t])          R tokens
    process: O_t     = Process(Z_t)              R tokens
    write:   M_{t+1} = S_M([M_t ‖ O_t ‖ I_t])    M tokens
with S_K the TokenLearner (v1.1, scenic `TokenLearnerModuleV11`): K importance maps
alpha(X) = MLP(LayerNorm(X)) over the S tokens, softmax over the S tokens, z_k = sum_s w_ks x_s.
The module adds learned position embeddings before each summariser (scenic's
`use_positional_embedding`, off by default there).

The reference below is written with plain tensor arithmetic in float64 from the module's own
parameters (read by name from `named_parameters`), never calling the module's submodules:
it would catch a summariser that normalises over the wrong axis, sums the normalised instead
of the raw tokens, puts a position embedding on the wrong segment or drops one, feeds the
write the read tokens instead of the processed ones, or carries the wrong memory to the next
step; the returned read/write weights (what introspection draws) are checked column by column.

Where the module departs from the paper and the official (scenic) module, as read here; the
model code is unchanged:
- Position embeddings are per segment, not one per position of the concatenation (scenic's
  `AddPositionEmbs`): one per memory slot, one per output slot, separate tables for the read
  and the write, and, without `input_tokens` (the default), ONE embedding common to every
  input token (shape (1, D)), so the summarisers cannot tell input tokens apart by position;
  with `input_tokens=N` each input position has its own.
- The write concatenates [M ‖ O ‖ I] as the paper writes it (scenic: [M ‖ I ‖ O]); the order
  changes nothing but the columns of the write weights (test_the_comparison_has_teeth).
- The processing unit is scenic's pre-LayerNorm ViT encoder with a final LayerNorm, but
  without the learned 1-D position embedding that scenic's `vit.Encoder` adds to its R input
  tokens by default (`positional_embedding='learned_1d'`); GELUs are exact (erf), flax's
  default is the tanh approximation; LayerNorm epsilon is torch's 1e-5 (flax: 1e-6).
- The TokenLearner's score-layer bias (`read.mlp.3.bias`, `write.mlp.3.bias`) has no effect:
  the softmax over the S tokens cancels a per-output constant (scenic's Dense has it too).
- `write_gate=True` (off by default) is not in the paper: a GRU-style gate mixes M_t and the
  write's output (checked here against its own formula).
"""

from __future__ import annotations

import math

import pytest
import torch

from ttm_policy import TokenTuringMachine, TTMConfig

D, M, R, N, B, T = 16, 4, 2, 3, 2, 3
EPS = 1e-5  # torch LayerNorm's default, used by every LayerNorm in the module


class Params(dict):
    """The module's parameters as float64 tensors by name, remembering which were read."""

    def __init__(self, model: torch.nn.Module):
        super().__init__({k: v.detach().double() for k, v in model.named_parameters()})
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> torch.Tensor:
        self.read.add(key)
        return super().__getitem__(key)


def layer_norm(x, w, b):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)  # biased variance, as LayerNorm
    return (x - mu) / torch.sqrt(var + EPS) * w + b


def gelu(x):  # exact (erf) GELU
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def dense(x, p, name):
    return x @ p[f"{name}.weight"].T + p[f"{name}.bias"]


def token_learner(x, p, name):
    """x (B, S, D) -> z (B, K, D), weights (B, K, S): K softmax maps over the S tokens."""
    h = layer_norm(x, p[f"{name}.norm.weight"], p[f"{name}.norm.bias"])
    scores = dense(gelu(dense(h, p, f"{name}.mlp.0")), p, f"{name}.mlp.3")  # (B, S, K)
    e = torch.exp(scores - scores.max(dim=1, keepdim=True).values)
    w = (e / e.sum(dim=1, keepdim=True)).transpose(1, 2)  # (B, K, S), softmax over S
    z = torch.einsum("bks,bsd->bkd", w, x)  # weighted sum of the raw (un-normalised) tokens
    return z, w


def transformer(z, p, layers, heads):
    """Pre-LN ViT encoder over (B, R, D): x += MHSA(LN(x)); x += MLP(LN(x)); final LN."""
    width = z.shape[-1]
    for i in range(layers):
        blk = f"process.blocks.{i}"
        h = layer_norm(z, p[f"{blk}.norm1.weight"], p[f"{blk}.norm1.bias"])
        qkv = h @ p[f"{blk}.attn.in_proj_weight"].T + p[f"{blk}.attn.in_proj_bias"]
        q, k, v = (
            y.reshape(*y.shape[:2], heads, -1).transpose(1, 2) for y in qkv.split(width, dim=-1)
        )  # (B, H, R, D/H)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // heads), dim=-1)
        att = (a @ v).transpose(1, 2).reshape(z.shape)  # (B, R, D)
        z = z + dense(att, p, f"{blk}.attn.out_proj")
        h = layer_norm(z, p[f"{blk}.norm2.weight"], p[f"{blk}.norm2.bias"])
        z = z + dense(gelu(dense(h, p, f"{blk}.mlp.0")), p, f"{blk}.mlp.3")
    return layer_norm(z, p["process.norm.weight"], p["process.norm.bias"])


def reference_step(p: Params, cfg: TTMConfig, x, memory):
    """x (B, N, D), memory (B, M, D) float64 -> O_t (B, R, D), M_{t+1} (B, M, D), weights."""
    # (1, D) embeddings broadcast over the N input tokens; (N, D) ones are per position.
    if cfg.memoryless:  # paper ablation: read the inputs alone, keep no memory
        read_in = x + p["read_input_pos"]
    else:
        read_in = torch.cat([memory + p["read_memory_pos"], x + p["read_input_pos"]], dim=1)
    z, read_w = token_learner(read_in, p, "read")  # read: (B, R, D)
    o = transformer(z, p, cfg.layers, cfg.heads)  # process: (B, R, D)
    if cfg.memoryless:
        return o, memory, read_w, None
    write_in = torch.cat(
        [
            memory + p["write_memory_pos"],
            o + p["write_output_pos"],
            x + p["write_input_pos"],
        ],
        dim=1,
    )  # [M_t ‖ O_t ‖ I_t] (B, M+R+N, D)
    new_memory, write_w = token_learner(write_in, p, "write")  # write: (B, M, D)
    if cfg.write_gate:  # not in the paper: g * M_t + (1 - g) * write, per slot and channel
        both = torch.cat([memory, new_memory], dim=-1)
        h = layer_norm(both, p["write_gate.norm.weight"], p["write_gate.norm.bias"])
        g = torch.sigmoid(dense(h, p, "write_gate.gate"))
        new_memory = g * memory + (1 - g) * new_memory
    return o, new_memory, read_w, write_w


def unroll(p: Params, cfg: TTMConfig, x: torch.Tensor):
    """The reference over x (B, T, N, D) float64 from zero memory -> outs (B, T, R, D),
    final memory (B, M, D). Also used by test_policy as an unroll independent of `step`."""
    slots = 0 if cfg.memoryless else cfg.memory_tokens
    memory, outs = torch.zeros(x.shape[0], slots, x.shape[-1], dtype=torch.float64), []
    for t in range(x.shape[1]):
        o, memory, _, _ = reference_step(p, cfg, x[:, t], memory)
        outs.append(o)
    return torch.stack(outs, 1), memory


VARIANTS = {
    "default": dict(),  # the default summariser config: tl read and write, one input embedding for all
    "input_tokens": dict(input_tokens=N),  # one embedding per input position
    "memoryless": dict(memoryless=True),
    "write_gate": dict(write_gate=True),
}


def make(variant: str) -> TokenTuringMachine:
    """A tiny TTM with every parameter moved off its initial value, so that position
    embeddings (initially N(0, 0.02)) and LayerNorm gains and biases (1 and 0) matter."""
    model = TokenTuringMachine(
        TTMConfig(dim=D, memory_tokens=M, read_tokens=R, **VARIANTS[variant])
    ).eval()
    with torch.no_grad():
        for q in model.parameters():
            q.add_(torch.randn_like(q) * 0.3)
    return model


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_step_matches_the_papers_equations_over_three_steps(variant):
    model = make(variant)
    p = Params(model)
    x = torch.randn(B, T, N, D)
    mem = model.init_memory(B)
    ref_mem = torch.zeros(B, *model.memory_shape, dtype=torch.float64)  # memory starts at zero
    with torch.no_grad():
        for t in range(T):  # each side carries its own memory
            out, mem, w = model.step_with_weights(x[:, t], mem)
            ref_out, ref_mem, ref_read_w, ref_write_w = reference_step(
                p, model.cfg, x[:, t].double(), ref_mem
            )
            torch.testing.assert_close(out.double(), ref_out, atol=1e-5, rtol=0)
            torch.testing.assert_close(mem.double(), ref_mem, atol=1e-5, rtol=0)
            torch.testing.assert_close(w["read"].double(), ref_read_w, atol=1e-5, rtol=0)
            if ref_write_w is not None:
                torch.testing.assert_close(w["write"].double(), ref_write_w, atol=1e-5, rtol=0)
    # The reference read every parameter the module has: none is outside the comparison.
    assert p.read == {name for name, _ in model.named_parameters()}
    if not model.cfg.memoryless:  # the memory moved: the comparison was not of zeros
        assert ref_mem.abs().mean() > 0.1


def test_sequence_form_with_reset_matches_the_reference():
    """`forward` over T steps, sample 1 starting a new episode at t = 2, equals the reference
    unrolled by hand with its memory set back to zero there."""
    model = make("default")
    p = Params(model)
    x = torch.randn(B, T, N, D)
    reset = torch.zeros(B, T, dtype=torch.bool)
    reset[1, 2] = True
    with torch.no_grad():
        outs, memory = model(x, reset=reset)
    ref_mem, ref_outs = torch.zeros(B, M, D, dtype=torch.float64), []
    for t in range(T):
        ref_mem = torch.where(reset[:, t, None, None], torch.zeros_like(ref_mem), ref_mem)
        o, ref_mem, _, _ = reference_step(p, model.cfg, x[:, t].double(), ref_mem)
        ref_outs.append(o)
    torch.testing.assert_close(outs.double(), torch.stack(ref_outs, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(memory.double(), ref_mem, atol=1e-5, rtol=0)


def test_the_comparison_has_teeth():
    """Every parameter moves the reference's outputs or memory far beyond the 1e-5
    tolerance (so a module that ignored or misrouted any of them would fail the tests
    above), and so does feeding the write the read tokens Z_t instead of the processed O_t.

    The concatenation order itself carries no meaning: the TokenLearner's softmax and
    weighted sum run over the set of tokens, so [M ‖ I ‖ O] (the official code's write order)
    with the same embeddings on the same segments gives the same memory as [M ‖ O ‖ I]."""
    model = make("default")
    p = Params(model)
    x = torch.randn(B, T, N, D).double()
    outs, memory = unroll(p, model.cfg, x)
    # The score layer's bias adds one constant per output token to all S scores, which the
    # softmax over S cancels: `read.mlp.3.bias` and `write.mlp.3.bias` have no effect (as in
    # scenic's TokenLearner, whose last Dense also has a bias).
    dead = {"read.mlp.3.bias", "write.mlp.3.bias"}
    for name in sorted(set(p) - dead):
        moved = Params(model)
        dict.__setitem__(moved, name, p[name] + 0.1 * torch.randn_like(p[name]))
        outs2, memory2 = unroll(moved, model.cfg, x)
        change = max((outs2 - outs).abs().max(), (memory2 - memory).abs().max())
        assert change > 1e-3, f"{name} moves the reference by {change:.2e} only"

    xt, mem = x[:, 0], torch.randn(B, M, D).double()
    _, want, _, _ = reference_step(p, model.cfg, xt, mem)
    read_in = torch.cat([mem + p["read_memory_pos"], xt + p["read_input_pos"]], dim=1)
    z, _ = token_learner(read_in, p, "read")
    o = transformer(z, p, model.cfg.layers, model.cfg.heads)
    mem_in, x_in = mem + p["write_memory_pos"], xt + p["write_input_pos"]
    unprocessed = torch.cat([mem_in, z + p["write_output_pos"], x_in], dim=1)
    assert (token_learner(unprocessed, p, "write")[0] - want).abs().max() > 1e-2
    reordered = torch.cat([mem_in, x_in, o + p["write_output_pos"]], dim=1)
    torch.testing.assert_close(token_learner(reordered, p, "write")[0], want)
