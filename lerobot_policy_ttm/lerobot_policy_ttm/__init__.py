"""LeRobot plugin: the TTM policy (`ttm_policy`'s network) as `--policy.type=ttm`.

LeRobot imports this package (its distribution name starts with `lerobot_policy_`) before it
parses its command line; importing the configuration registers the type. LeRobot then finds
`TTMPolicy` in `modeling_ttm` and `make_ttm_pre_post_processors` in `processor_ttm` by name
(configuration_ttm -> modeling_ttm / processor_ttm).
"""

from lerobot_policy_ttm.configuration_ttm import TTMConfig

__all__ = ["TTMConfig"]
