"""ttm_policy: Token Turing Machines as visuomotor robot policies.

The model layer: it depends on nothing else in this repository.
"""

from ttm_policy.baselines import (
    CausalTransformerConfig,
    CausalTransformerCore,
    LSTMConfig,
    LSTMCore,
)
from ttm_policy.policy import PolicyConfig, TTMPolicy
from ttm_policy.ttm import TokenTuringMachine, TTMConfig

__version__ = "0.1.0"

__all__ = [
    "CausalTransformerConfig",
    "CausalTransformerCore",
    "LSTMConfig",
    "LSTMCore",
    "PolicyConfig",
    "TTMConfig",
    "TTMPolicy",
    "TokenTuringMachine",
    "__version__",
]
