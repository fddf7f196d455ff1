"""Training: datasets (windows / whole episodes), normalisation, the trainer and `ttm-train`.

Layers: `train` may import `ttm_policy` and `envs`, never `eval`.
"""
