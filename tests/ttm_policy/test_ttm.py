"""Properties of the Token Turing Machine and its ablations."""

import itertools

import pytest
import torch
from torch import nn

from ttm_policy import TokenTuringMachine, TTMConfig

D, N, M, R = 32, 5, 16, 4
SUMMARISERS = ["tl", "tl-mha", "add-erase", "linear", "pool"]
UNITS = ["transformer", "mixer", "mlp"]


def ttm(**kw) -> TokenTuringMachine:
    cfg = dict(dim=D, memory_tokens=M, read_tokens=R, input_tokens=N, layers=1, heads=4, mlp_dim=64)
    return TokenTuringMachine(TTMConfig(**{**cfg, **kw})).eval()


@pytest.mark.parametrize("summariser,unit", list(itertools.product(SUMMARISERS, UNITS)))
@pytest.mark.parametrize("batch", [1, 4])
def test_shapes_and_dtypes(summariser, unit, batch):
    model = ttm(summariser=summariser, processing_unit=unit)
    memory = model.init_memory(batch)
    assert memory.shape == (batch, M, D) and memory.dtype == torch.float32
    out, memory = model.step(torch.randn(batch, N, D), memory)
    assert out.shape == (batch, R, D) and memory.shape == (batch, M, D)
    x = torch.randn(batch, 3, N, D)
    with torch.no_grad():
        outs, memory = model(x)
        assert outs.shape == (batch, 3, R, D) and outs.dtype == torch.float32
        assert torch.isfinite(outs).all() and torch.isfinite(memory).all()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, low_memory = model(x)
    # CPU autocast runs the units' final LayerNorm in bf16 (CUDA autocast would give float32),
    # so the outputs are bf16; the write runs outside autocast, so the memory stays float32.
    assert low.shape == (batch, 3, R, D) and low.dtype == torch.bfloat16
    assert low_memory.dtype == torch.float32
    # The same numbers up to bf16 rounding (8 significant bits, outputs of order 3): measured
    # at most 0.04 for the outputs and 0.02 for the memory over the 3 steps.
    torch.testing.assert_close(low.float(), outs, atol=0.1, rtol=0.02)
    torch.testing.assert_close(low_memory, memory, atol=0.05, rtol=0.02)


def test_variable_token_count_without_input_tokens():
    model = TokenTuringMachine(TTMConfig(dim=D, memory_tokens=M, read_tokens=R, layers=1, heads=4))
    m = model.init_memory(2)
    for n in (3, 11):  # N may change between models sharing a TTM config
        out, m = model.step(torch.randn(2, n, D), m)
        assert out.shape == (2, R, D)


@pytest.mark.parametrize("summariser", ["tl", "tl-mha", "pool"])
def test_read_weights_are_distributions(summariser):
    model = ttm(summariser=summariser)
    _, _, w = model.step_with_weights(torch.randn(3, N, D), model.init_memory(3))
    if summariser == "pool":
        assert w["read"] is None
        return
    assert w["read"].shape == (3, R, M + N) and w["write"].shape == (3, M, M + R + N)
    for k in ("read", "write"):
        assert (w[k] >= 0).all()
        torch.testing.assert_close(w[k].sum(-1), torch.ones(w[k].shape[:2]))


def test_memoryless_memory_is_empty_and_unchanged():
    model = ttm(memoryless=True)
    memory = model.init_memory(2)
    assert memory.shape == (2, 0, D)
    out, memory2 = model.step(torch.randn(2, N, D), memory)
    assert out.shape == (2, R, D) and memory2.shape == (2, 0, D)


def test_learned_memory_init_is_a_parameter():
    model = ttm(memory_init="learned")
    a, b = model.init_memory(2)
    torch.testing.assert_close(a, b)
    assert a.abs().sum() > 0
    assert model.init_memory(1).requires_grad


@pytest.mark.parametrize(
    "call,match",
    [
        (
            lambda m: m.step(torch.randn(2, N, D + 1), m.init_memory(2)),
            r"\(B, 5, 32\).*\(2, 5, 33\)",
        ),
        (
            lambda m: m.step(torch.randn(2, N + 1, D), m.init_memory(2)),
            r"\(B, 5, 32\).*\(2, 6, 32\)",
        ),
        (
            lambda m: m.step(torch.randn(2, N, D), torch.zeros(2, M + 1, D)),
            r"\(2, 16, 32\).*\(2, 17, 32\)",
        ),
        (lambda m: m.step(torch.randn(3, N, D), m.init_memory(2)), r"\(3, 16, 32\).*\(2, 16, 32\)"),
        (lambda m: m(torch.randn(2, N, D)), r"\(B, T, N, D\).*\(2, 5, 32\)"),
        (
            lambda m: m(torch.randn(2, 4, N, D), reset=torch.zeros(2, 3, dtype=torch.bool)),
            r"\(2, 4\).*\(2, 3\)",
        ),
    ],
)
def test_bad_shapes_raise_value_error_naming_both_shapes(call, match):
    with pytest.raises(ValueError, match=match):
        call(ttm())


def test_write_gate_interpolates_between_keeping_and_replacing_memory():
    """write_gate mixes old memory and the summariser's write per slot and channel: a gate
    forced open (bias +50) keeps the memory exactly, forced shut (bias -50) is the plain
    write; at its initial bias (2) it keeps most of the old memory."""
    torch.manual_seed(0)
    gated, plain = ttm(write_gate=True), ttm()
    gated.load_state_dict(plain.state_dict(), strict=False)  # same read / process / write
    memory, tokens = torch.randn(3, M, D), torch.randn(3, N, D)
    with torch.no_grad():
        _, replaced = plain.step(tokens, memory)
        _, mixed = gated.step(tokens, memory)
        assert (mixed - memory).abs().mean() < 0.3 * (replaced - memory).abs().mean()
        gated.write_gate.gate.bias.fill_(50.0)
        torch.testing.assert_close(gated.step(tokens, memory)[1], memory)
        gated.write_gate.gate.bias.fill_(-50.0)
        torch.testing.assert_close(gated.step(tokens, memory)[1], replaced)


def test_write_gate_bias_sets_how_long_the_memory_holds_at_initialisation():
    """write_gate_bias b starts the gate keeping sigmoid(b) of each slot a step: over 100
    steps of fresh input a gate started at 5 (0.993 a step) still holds most of the first
    memory, one started at the default 2 (0.88) has lost it."""
    torch.manual_seed(0)
    memory = torch.randn(3, M, D)
    left = {}
    for b in (2.0, 5.0):
        core = ttm(write_gate=True, write_gate_bias=b)
        held = memory
        with torch.no_grad():
            for _ in range(100):
                held = core.step(torch.randn(3, N, D), held)[1]
        left[b] = nn.functional.cosine_similarity(held.flatten(1), memory.flatten(1)).mean()
    assert left[5.0] > 0.3 > 0.1 > left[2.0]


def test_copy_biased_write_holds_each_slot_without_drift():
    """write_self_bias starts each new slot copying its old slot (weight e^c / (e^c + S - 1)
    at init, against ~1/S for the official write, whose slots average); the position
    embeddings steer the scores only, so a slot that copies itself exactly (bias 50) keeps
    its content over 100 steps instead of adding its embedding at every step."""
    torch.manual_seed(0)
    copy, plain = ttm(write_self_bias=4.0), ttm()
    S = M + R + N
    memory = torch.randn(3, M, D)
    with torch.no_grad():
        tokens = torch.randn(3, N, D)
        own = torch.arange(M)
        w_copy = copy.step_with_weights(tokens, memory)[2]["write"][:, own, own]
        w_plain = plain.step_with_weights(tokens, memory)[2]["write"][:, own, own]
        assert w_copy.mean() > 0.5 > 3 / S > w_plain.mean()
        copy.write_bias.fill_(0.0)
        copy.write_bias += torch.eye(M) * 50.0
        held = memory
        for _ in range(100):
            held = copy.step(torch.randn(3, N, D), held)[1]
        torch.testing.assert_close(held, memory)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(write_self_bias=4.0, summariser="add-erase"), "needs the `tl` summariser"),
        (dict(write_self_bias=4.0, memoryless=True), "needs the `tl` summariser"),
        (dict(write_gate=True, summariser="add-erase"), "already gates"),
        (dict(write_gate_bias=5.0), "needs write_gate=True"),
        (dict(dim=30, heads=4), "divisible"),
        (dict(summariser="linear", input_tokens=None), "input_tokens"),
        (dict(summariser="nope"), "unknown summariser"),
        (dict(memory_tokens=0), "memory_tokens"),
    ],
)
def test_config_validation(kw, match):
    base = dict(dim=D, memory_tokens=M, read_tokens=R, input_tokens=N, layers=1, heads=4)
    with pytest.raises(ValueError, match=match):
        TTMConfig(**{**base, **kw})
