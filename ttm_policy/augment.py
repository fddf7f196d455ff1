"""Image augmentation on uint8 batches, on whatever device the batch is on.

Dimension legend: B batch, T time, H, W image size, h, w crop size, C = 3 channels.
Inputs are uint8 `(B, T, H, W, C)` or `(B, H, W, C)` (channels last, as the dataset gives
them); outputs keep the dtype and layout. One crop is drawn per sample and shared by all T
steps of it, so a sequence stays temporally consistent (as robomimic's crop randomizer).
`TTMPolicy.encode` crops with these: `random_crop` in training, `center_crop` at inference.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _as_seq(images: Tensor) -> tuple[Tensor, bool]:
    """(B, H, W, C) -> (B, 1, H, W, C); (B, T, H, W, C) unchanged. Returns (x, had_time)."""
    if images.ndim == 5:
        return images, True
    if images.ndim == 4:
        return images.unsqueeze(1), False
    raise ValueError(
        f"expected images (B, T, H, W, C) or (B, H, W, C), got shape {tuple(images.shape)}"
    )


def _crop_at(x: Tensor, top: list[int], left: list[int], h: int, w: int) -> Tensor:
    """Per-sample crop of x (B, T, H, W, C) at (top[b], left[b]), inside the image: one slice
    copy per sample (a fancy index over rows and columns cost ~60 ms per camera per training
    step here; this is a few ms)."""
    return torch.stack([x[b, :, t : t + h, c : c + w] for b, (t, c) in enumerate(zip(top, left))])


def _check_size(x: Tensor, size: int) -> None:
    H, W = x.shape[-3], x.shape[-2]
    if not 1 <= size <= min(H, W):
        raise ValueError(
            f"crop size {size} does not fit images of {H}x{W}; use 1 <= size <= {min(H, W)}"
        )


def random_crop(images: Tensor, size: int, generator: torch.Generator | None = None) -> Tensor:
    """Random size x size crop, one position per sample, the same for all its T steps."""
    _check_size(images, size)
    x, had_time = _as_seq(images)
    B, _, H, W, _ = x.shape
    top = torch.randint(0, H - size + 1, (B,), generator=generator).tolist()  # B rows
    left = torch.randint(0, W - size + 1, (B,), generator=generator).tolist()  # B columns
    out = _crop_at(x, top, left, size, size)  # (B, T, size, size, C)
    return out if had_time else out[:, 0]


def center_crop(images: Tensor, size: int) -> Tensor:
    """Deterministic central size x size crop (evaluation counterpart of `random_crop`);
    for odd margins the extra pixel goes to the bottom/right, as torchvision does."""
    _check_size(images, size)
    H, W = images.shape[-3], images.shape[-2]
    top, left = (H - size) // 2, (W - size) // 2
    return images[..., top : top + size, left : left + size, :]
