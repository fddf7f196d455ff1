"""Evaluation: `ttm-eval`, the quickstart, results tables, plots and benchmarks (`ttm-bench`).

Layers: `eval` may import `ttm_policy`, `envs` and `train`; no other package imports `eval`.
"""
