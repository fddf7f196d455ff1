"""Memory properties every temporal core must have (TTM, its memory-less ablation, LSTM, GRU,
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


# The cores whose sequence form does not loop over `step`: one nn.LSTM / nn.GRU call over the
# sequence, one causal-masked pass. The TTM's `forward` loops over `step`, so comparing the two
# would compare `step` with itself; test_ttm_reference checks both forms against the paper's
# equations instead.
@pytest.mark.parametrize("kind", ["lstm", "gru", "transformer", "transformer-full"])
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


def recall_batch(gen: torch.Generator, cues: torch.Tensor, b: int, steps: int = 6):
    """Cue class y (B,) shown as token 0 at t = 0; every other token, at every step, random.
    Returns x (B, steps, N, D), y, and x_swapped: the same but for the other cue at t = 0."""
    y = torch.randint(2, (b,), generator=gen)
    x = torch.randn(b, steps, N, D, generator=gen)
    x[:, 0, 0] = cues[y]
    swapped = x.clone()
    swapped[:, 0, 0] = cues[1 - y]
    return x, y, swapped


def train_recall(core, gen: torch.Generator, cues: torch.Tensor, iters: int = 150):
    """Train core + a linear read-out to name at the last step the cue seen 5 steps before;
    stop once 97% of 256 fresh sequences are right. Returns the answer: x -> logits (B, 2)."""
    head = torch.nn.Linear(D, 2)
    params = [*core.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=3e-3)

    def answer(x):
        return head(core(x)[0][:, -1].mean(1))  # (B, 2), read at t = T-1

    for it in range(1, iters + 1):
        x, y, _ = recall_batch(gen, cues, 32)
        loss = torch.nn.functional.cross_entropy(answer(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 10 == 0:
            with torch.no_grad():
                x, y, _ = recall_batch(gen, cues, 256)
                if (answer(x).argmax(-1) == y).float().mean() >= 0.97:
                    break
    return answer


BLIND = ("ttm-memoryless", "transformer")  # cannot see t = 0 from t = 5 (window 4)


@pytest.mark.parametrize(
    "kind", ["ttm", "ttm-gated", "ttm-copy", "lstm", "gru", "transformer-full", *BLIND]
)
def test_memory_carries_a_cue_five_steps_back_to_the_answer(kind):
    """The answer at t = 5 depends on which of two cues was shown at t = 0 (distractors
    elsewhere). A core with memory, trained briefly, names it on fresh sequences, and swapping
    the cue (nothing else) flips its answer. The memory-less TTM and the window-4 Transformer
    cannot see t = 0 from t = 5: swapping the cue leaves their outputs bit-identical."""
    gen = torch.Generator().manual_seed(0)
    cues = torch.randn(2, D, generator=gen) * 2  # (2, D), twice a distractor's norm
    core = make_core(kind)
    answer = train_recall(core, gen, cues, iters=10 if kind in BLIND else 150)
    core.eval()
    x, y, swapped = recall_batch(gen, cues, 512)
    with torch.no_grad():
        a, b = answer(x), answer(swapped)
    if kind in BLIND:
        torch.testing.assert_close(a, b, atol=0, rtol=0)
        return
    assert (a.argmax(-1) == y).float().mean() >= 0.95  # chance is 0.5
    assert (b.argmax(-1) == 1 - y).float().mean() >= 0.95  # the swapped cue flips the answer


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


def test_full_history_cache_drops_finished_episodes_when_streamed_in_pieces():
    """Training streams episode after episode through a batch row, in pieces, carrying the
    state. The full-history cache keeps only steps some row can still attend to: with both
    rows' episodes 7 steps long, it stays within one episode (not 40 steps), and every piece's
    outputs equal those of each episode run from a fresh cache."""
    core = make_core("transformer-full").eval()
    B, L, pieces, T = 2, 7, 8, 5  # 40 steps: episodes start every 7 steps, row 1 three later
    x = torch.randn(B, pieces * T, N, D)
    starts = torch.zeros(B, pieces * T, dtype=torch.bool)
    starts[0, ::L] = True
    starts[1, 3::L] = True
    state, outs, sizes = None, [], []
    with torch.no_grad():
        for p in range(pieces):
            sl = slice(p * T, (p + 1) * T)
            out, state = core(x[:, sl], state, reset=starts[:, sl])
            outs.append(out)
            sizes.append(state[0].shape[3] // N)  # cached steps
        outs = torch.cat(outs, 1)
        assert max(sizes) <= 2 * L and sizes[-1] < pieces * T
        for b in range(B):
            bounds = [*starts[b].nonzero().flatten().tolist(), pieces * T]
            for s, e in zip(bounds[:-1], bounds[1:]):
                fresh = core(x[b : b + 1, s:e])[0]
                torch.testing.assert_close(outs[b : b + 1, s:e], fresh, atol=1e-5, rtol=1e-5)


# The window-4 Transformer has no path from step 0 to step 19.
@pytest.mark.parametrize("kind", ["ttm", "ttm-gated", "lstm", "gru", "transformer-full"])
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


@pytest.mark.parametrize("kind", ["lstm", "gru", "transformer"])
def test_baseline_shape_errors(kind):
    core = make_core(kind)
    with pytest.raises(ValueError, match=r"\(2, 5, 31\)"):
        core.step(torch.randn(2, N, D - 1), core.init_memory(2))
    with pytest.raises(ValueError, match="shape"):
        core.step(torch.randn(3, N, D), core.init_memory(2))


@pytest.mark.parametrize("kind", ["ttm", "ttm-gated", "lstm", "gru", "transformer-full"])
def test_flatten_state_tells_two_histories_apart_and_keeps_only_float_parts(kind):
    from ttm_policy.state import flatten

    core = make_core(kind).eval()
    x = torch.randn(1, 6, N, D)
    y = x.clone()
    y[:, 0] = torch.randn(1, N, D)  # another cue at step 0, the same steps after it
    with torch.no_grad():
        _, sx = core(x)
        _, sy = core(y)
        _, sx2 = core(x)
    fx, fy = flatten(sx), flatten(sy)
    parts = sx if isinstance(sx, tuple) else (sx,)
    assert fx.dtype == torch.float32 and fx.dim() == 1
    assert fx.numel() == sum(p.numel() for p in parts if p.is_floating_point())
    assert torch.equal(fx, flatten(sx2))  # the same history, the same vector
    assert (fx - fy).norm() > 1e-4 * fx.norm()  # the step-0 difference is still in the state
