"""Memory properties every temporal core must have (TTM, its memory-less ablation, LSTM,
windowed and full-history causal Transformers)."""

import pytest
import torch

from tests.ttm_policy.cores import ALL, D, N, make_core


def stream(core, x, state=None):
    state = core.init_memory(x.shape[0]) if state is None else state
    outs = []
    for t in range(x.shape[1]):
        out, state = core.step(x[:, t], state)
        outs.append(out)
    return torch.stack(outs, 1), state


@pytest.mark.parametrize("kind", ALL)
def test_streaming_equals_sequence_over_50_steps(kind):
    core = make_core(kind).eval()
    x = torch.randn(2, 50, N, D)
    with torch.no_grad():
        seq, seq_state = core(x)
        st, st_state = stream(core, x)
    torch.testing.assert_close(st, seq, atol=1e-5, rtol=0)
    a = seq_state if isinstance(seq_state, tuple) else (seq_state,)
    b = st_state if isinstance(st_state, tuple) else (st_state,)
    for u, v in zip(a, b):
        if u.is_floating_point():
            torch.testing.assert_close(u, v, atol=1e-5, rtol=0)
        else:
            assert torch.equal(u, v)


@pytest.mark.parametrize("kind", ALL)
def test_causality(kind):
    core = make_core(kind).eval()
    x = torch.randn(2, 12, N, D)
    y = x.clone()
    y[:, 7:] = torch.randn_like(y[:, 7:])
    with torch.no_grad():
        a, _ = core(x)
        b, _ = core(y)
    torch.testing.assert_close(a[:, :7], b[:, :7], atol=0, rtol=0)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("kind", ["ttm", "ttm-gated", "lstm", "transformer-full"])
def test_memory_carries_information_to_the_last_step(kind):
    core = make_core(kind).eval()
    x = torch.randn(2, 20, N, D)
    y = x.clone()
    y[:, 0] = torch.randn_like(y[:, 0])
    with torch.no_grad():
        assert (core(x)[0][:, -1] - core(y)[0][:, -1]).abs().max() > 1e-6  # far above float noise


def test_memoryless_ignores_the_past():
    core = make_core("ttm-memoryless").eval()
    x = torch.randn(2, 20, N, D)
    y = x.clone()
    y[:, :-1] = torch.randn_like(y[:, :-1])
    with torch.no_grad():
        torch.testing.assert_close(core(x)[0][:, -1], core(y)[0][:, -1], atol=0, rtol=0)


def test_windowed_transformer_forgets_beyond_its_window():
    core = make_core("transformer").eval()  # one layer, window 4: step t sees steps t-3..t
    x = torch.randn(1, 10, N, D)
    y = x.clone()
    y[:, 0] = torch.randn_like(y[:, 0])
    with torch.no_grad():
        a, b = core(x)[0], core(y)[0]
    assert not torch.allclose(a[:, 3], b[:, 3])
    torch.testing.assert_close(a[:, 4:], b[:, 4:], atol=0, rtol=0)


@pytest.mark.parametrize(
    "kind", ["ttm", "ttm-gated", "lstm", "transformer-full"]
)  # the window has no path
def test_gradient_reaches_step_zero_and_bptt_cuts_it(kind):
    core = make_core(kind)
    x = torch.randn(2, 20, N, D, requires_grad=True)
    core(x)[0][:, -1].sum().backward()
    assert x.grad[:, 0].abs().sum() > 0
    if kind.startswith("transformer"):
        return  # no recurrence: truncated BPTT does not apply
    x.grad = None
    core(x, bptt=8)[0][:, -1].sum().backward()
    assert x.grad[:, :16].abs().sum() == 0  # memory detached at steps 8 and 16
    assert x.grad[:, 16:].abs().sum() > 0


@pytest.mark.parametrize("kind", ALL)
def test_reset_mask_restores_initial_memory_for_masked_samples_only(kind):
    core = make_core(kind).eval()
    B, T, t0 = 3, 10, 6
    x = torch.randn(B, T, N, D)
    reset = torch.zeros(B, T, dtype=torch.bool)
    reset[1, t0] = True  # sample 1 starts a new episode at t0
    with torch.no_grad():
        outs, _ = core(x, reset=reset)
        plain, _ = core(x)
        fresh, _ = core(x[1:2, t0:])  # the new episode from its initial memory
    torch.testing.assert_close(outs[[0, 2]], plain[[0, 2]], atol=1e-6, rtol=0)
    torch.testing.assert_close(outs[1, :t0], plain[1, :t0], atol=1e-6, rtol=0)
    torch.testing.assert_close(outs[1:2, t0:], fresh, atol=1e-5, rtol=0)
    # Streaming with where_reset gives the same as the sequence form's reset mask.
    with torch.no_grad():
        state, outs_stream = core.init_memory(B), []
        for t in range(T):
            state = core.reset_memory(state, reset[:, t])
            out, state = core.step(x[:, t], state)
            outs_stream.append(out)
    torch.testing.assert_close(torch.stack(outs_stream, 1), outs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_baseline_shape_errors(kind):
    core = make_core(kind)
    with pytest.raises(ValueError, match=r"\(2, 5, 31\)"):
        core.step(torch.randn(2, N, D - 1), core.init_memory(2))
    with pytest.raises(ValueError, match="shape"):
        core.step(torch.randn(3, N, D), core.init_memory(2))
