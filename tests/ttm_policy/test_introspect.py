"""Memory introspection: traces have the right shapes and are distributions; retention is
measured through the write weights."""

import pytest
import torch

from ttm_policy import TokenTuringMachine, TTMConfig
from ttm_policy.introspect import token_influence, token_retention, trace

D, N, M, R, T = 32, 4, 16, 8, 20


def ttm(**kw):
    return TokenTuringMachine(
        TTMConfig(dim=D, memory_tokens=M, read_tokens=R, layers=1, heads=4, **kw)
    )


def test_trace_shapes_and_distributions():
    tr = trace(ttm(), torch.randn(2, T, N, D))
    assert tr["read"].shape == (2, T, R, M + N)
    assert tr["write"].shape == (2, T, M, M + R + N)
    assert tr["memory_norm"].shape == (2, T, M)
    for k in ("read", "write"):
        torch.testing.assert_close(tr[k].sum(-1), torch.ones(tr[k].shape[:-1]))


def test_untrained_write_forgets_geometrically():
    curve = token_retention(ttm(), torch.randn(8, T, N, D))
    assert curve.shape == (T,) and curve[0] == 1
    assert (curve[1:] <= curve[:-1] + 1e-6).all()  # mass only leaves through the write
    # Each slot spreads over M+R+N tokens, so about M/(M+R+N) = 0.57 survives a step.
    assert 0.3 < curve[1] < 0.8
    assert curve[15] < 0.05


def test_retention_rejects_writes_that_are_not_weighted_sums():
    with pytest.raises(ValueError, match="add-erase"):
        token_retention(ttm(summariser="add-erase"), torch.randn(1, 3, N, D))


@pytest.mark.parametrize("summariser", ["tl", "add-erase", "pool"])
def test_influence_follows_every_path(summariser):
    model = ttm(summariser=summariser).eval()
    curve = token_influence(model, torch.randn(4, T, N, D))
    assert curve.shape == (T,) and curve[0] == pytest.approx(1.0)
    assert curve[-1] > 1e-3  # the read -> process -> write loop keeps the token in memory
    with pytest.raises(ValueError, match="memory-less"):
        token_influence(ttm(memoryless=True), torch.randn(1, 3, N, D))
