"""The small learning test: memory is what solves "recall the cue" after 29 distractor steps."""

import pytest

from eval.recall import RecallConfig, small_ttm, train_recall


@pytest.mark.slow
def test_ttm_recalls_the_cue_and_the_memoryless_variant_cannot():
    cfg = RecallConfig(steps=30, max_iters=150)  # the TTM needs ~25-50 iterations (~10 s)
    ttm = train_recall(small_ttm(cfg.dim), cfg, seed=0)
    assert ttm["accuracy"] >= 0.95, ttm["curve"]
    cfg.max_iters = 100  # several times what the TTM needed; chance is 0.5
    memoryless = train_recall(small_ttm(cfg.dim, memoryless=True), cfg, seed=0)
    assert memoryless["accuracy"] <= 0.60, memoryless["curve"]
    assert memoryless["iters"] == cfg.max_iters  # it never reached the target
