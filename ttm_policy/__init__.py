"""ttm_policy: Token Turing Machines as visuomotor robot policies.

The model layer. Layers: `ttm_policy` imports nothing from `envs`, `train` or `eval` (it
depends on nothing else in this repository).

The public names below are imported lazily (PEP 562): `import ttm_policy` alone imports no
torch, so the robot-side runtime (`ttm_policy.runtime`, numpy + onnxruntime only) can live in
this package. `from ttm_policy import TTMPolicy` works as before and imports torch then.
"""

from importlib import import_module

__version__ = "0.1.0"

# Public name -> the submodule that defines it.
_LAZY = {
    "CausalTransformerConfig": "ttm_policy.baselines",
    "CausalTransformerCore": "ttm_policy.baselines",
    "CORES": "ttm_policy.cores",
    "GRUConfig": "ttm_policy.gru",
    "GRUCore": "ttm_policy.gru",
    "LSTMConfig": "ttm_policy.baselines",
    "LSTMCore": "ttm_policy.baselines",
    "PolicyConfig": "ttm_policy.policy",
    "TTMPolicy": "ttm_policy.policy",
    "TTMConfig": "ttm_policy.ttm",
    "TokenTuringMachine": "ttm_policy.ttm",
}

__all__ = [*sorted(_LAZY), "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'ttm_policy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
