"""Observation tokenizers: camera images and low-dimensional state become D-wide tokens.

Dimensions: B batch (B*T when a sequence is folded into the batch), H, W image size (after
the crop), C channels, h, w the conv feature grid, G = h*w grid tokens, K tokens per camera,
Dl a low-dim key's width, D token width.

The image tokenizer follows RT-1's shape (a conv trunk gives a grid of tokens, TokenLearner
reduces them to a few) with a small conv trunk trained from scratch instead of RT-1's
ImageNet-pretrained, FiLM-conditioned EfficientNet-B3: no weights can be downloaded here,
there is no language instruction to condition on, and it has to train on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from ttm_policy.summarisers import TokenLearner


def conv_grid_size(size: int, strides: tuple[int, ...]) -> int:
    """Side of the feature grid after 3x3 convs with padding 1 and these strides."""
    for s in strides:
        size = (size + 2 - 3) // s + 1
    return size


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm (the same parameters and state-dict keys) that, on CPU, normalises an NCHW
    copy of a channels-last input when its groups hold one or two channels, and hands back
    channels-last.

    The trunk's input is channels-last (the uint8 HWC images permuted), and oneDNN's
    convolutions run ~10x faster on it than on NCHW; torch's CPU GroupNorm is slow on
    channels-last when a group holds few channels (forward + ReLU + backward, one thread, 700
    images: (8, 29, 29) 381 ms against 205 ms with the two copies; (16, 8, 8) 32 against 18),
    and faster when it holds many ((32, 32, 32), 4 per group: 1549 against 2807). The
    default recipe's trunk (8, 8, 16, 16) has 1-2 per group: one profiled training step on
    Lift spent 40% of its time in GroupNorm before this."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.device.type != "cpu"
            or self.num_channels // self.num_groups > 2
            or not x.is_contiguous(memory_format=torch.channels_last)
        ):
            return super().forward(x)
        return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)


class ConvTokenizer(nn.Module):
    """One camera: uint8 (B, H, W, 3) -> K tokens (B, K, D).

    Four 3x3 convs (strides 2, 2, 2, 1), each followed by GroupNorm and ReLU: 76 px -> a 10x10
    grid, 84 px -> 11x11, 28 px -> 4x4 (RT-1 gets 9x9 = 81 from EfficientNet). A 1x1 conv
    projects to D, a learned 2-D position embedding (one vector per grid cell) is added, and
    TokenLearner reduces the G grid tokens to K.
    """

    strides = (2, 2, 2, 1)

    def __init__(
        self,
        *,
        dim: int,
        image_size: int,
        num_tokens: int = 8,  # RT-1 reduces 81 tokens to 8
        # Widens as the grid shrinks. Measured (1 CPU thread, fwd+bwd of 160 76-px images):
        # 0.28 s, against 0.54 s for (32, 64, 64, 128); DrQ's encoder is also 32-wide.
        channels: tuple[int, ...] = (32, 32, 64, 64),
        bottleneck: int = 64,  # TokenLearner MLP bottleneck, the official default
    ):
        super().__init__()
        if len(channels) != len(self.strides):
            raise ValueError(f"channels must list {len(self.strides)} widths, got {channels}")
        layers: list[nn.Module] = []
        c_in = 3
        for c, s in zip(channels, self.strides):
            layers += [
                nn.Conv2d(c_in, c, 3, stride=s, padding=1, bias=False),
                GroupNorm(min(8, c), c),  # GroupNorm: batch-size independent, as robomimic
                nn.ReLU(inplace=True),
            ]
            c_in = c
        self.trunk = nn.Sequential(*layers)
        self.proj = nn.Conv2d(c_in, dim, 1)
        self.image_size = image_size
        self.grid = conv_grid_size(image_size, self.strides)
        self.pos = nn.Parameter(torch.randn(self.grid * self.grid, dim) * 0.02)  # (G, D)
        self.token_learner = TokenLearner(dim=dim, num_tokens=num_tokens, bottleneck=bottleneck)
        self.num_tokens = num_tokens

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images uint8 (B, H, W, 3), H = W = image_size -> tokens (B, K, D)."""
        if (
            images.ndim != 4
            or tuple(images.shape[1:]) != (self.image_size, self.image_size, 3)
            or images.dtype != torch.uint8
        ):
            raise ValueError(
                f"images must be uint8 (B, {self.image_size}, {self.image_size}, 3), "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        # (B, 3, H, W) in [-1, 1]; in place: one float copy of the batch's images, not three
        x = images.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        x = self.proj(self.trunk(x))  # (B, D, h, w)
        x = x.flatten(2).transpose(1, 2) + self.pos  # (B, G, D)
        return self.token_learner(x)[0]  # (B, K, D)


class LowDimTokenizer(nn.Module):
    """Normalised low-dim vectors -> tokens: (B, Dl) per key -> (B, 1, D) each, or all keys
    concatenated -> one token. A 2-layer MLP per token (robomimic feeds low-dim state to its
    MLP/RNN unchanged; a token needs width D)."""

    def __init__(
        self,
        *,
        dims: dict[str, int],
        dim: int,
        per_key: bool = False,  # one token for all keys: fewer tokens, robomimic-like
    ):
        super().__init__()
        self.keys = list(dims)
        self.per_key = per_key
        groups = {k: dims[k] for k in self.keys} if per_key else {"all": sum(dims.values())}
        self.mlps = nn.ModuleDict(
            {
                k: nn.Sequential(nn.Linear(d, dim), nn.GELU(), nn.Linear(dim, dim))
                for k, d in groups.items()
            }
        )

    @property
    def num_tokens(self) -> int:
        return len(self.keys) if self.per_key else (1 if self.keys else 0)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """x: key -> normalised (B, Dl) -> tokens (B, num_tokens, D)."""
        if self.per_key:
            return torch.stack([self.mlps[k](x[k]) for k in self.keys], dim=1)  # (B, n, D)
        flat = torch.cat([x[k] for k in self.keys], dim=-1)  # (B, sum Dl)
        return self.mlps["all"](flat).unsqueeze(1)  # (B, 1, D)
