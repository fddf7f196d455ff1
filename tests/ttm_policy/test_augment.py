"""ttm_policy.augment: the crops the policy trains (random) and acts (central) with."""

import pytest
import torch

from ttm_policy.augment import center_crop, random_crop
from ttm_policy.policy import _crop


def _coord_images(B: int, T: int, H: int = 84, W: int = 84) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) whose pixel (b, t, i, j) is (i, j, t): a crop reveals its offset."""
    i = torch.arange(H)[:, None].expand(H, W)
    j = torch.arange(W)[None, :].expand(H, W)
    x = torch.stack([i, j, torch.zeros_like(i)], -1)[None, None].repeat(
        B, T, 1, 1, 1
    )  # (B, T, H, W, 3)
    x[..., 2] = torch.arange(T)[None, :, None, None]
    return x.to(torch.uint8)


def test_random_crop_same_over_time_and_varies_over_batch():
    B, T, s = 16, 5, 76
    x = _coord_images(B, T)
    out = random_crop(x, s, generator=torch.Generator().manual_seed(0))
    assert out.shape == (B, T, s, s, 3) and out.dtype == torch.uint8
    top, left = out[:, :, 0, 0, 0], out[:, :, 0, 0, 1]  # (B, T)
    assert (top == top[:, :1]).all() and (left == left[:, :1]).all()  # same crop for all T steps
    assert len(set(top[:, 0].tolist())) > 1  # different samples, different crops
    assert (out[..., 2] == torch.arange(T)[None, :, None, None]).all()  # time order kept
    rows = top[:, 0, None].long() + torch.arange(s)  # (B, s): a contiguous block of rows
    assert (out[:, 0, :, 0, 0].long() == rows).all()
    assert random_crop(x[:, 0], s).shape == (B, s, s, 3)  # (B, H, W, 3) too


def test_center_crop_is_deterministic_and_checks_the_size():
    x = _coord_images(2, 3)
    out = center_crop(x, 76)
    assert out.shape == (2, 3, 76, 76, 3) and out[0, 0, 0, 0, 0] == 4 and out[0, 0, 0, 0, 1] == 4
    with pytest.raises(ValueError, match="does not fit images of 84x84"):
        center_crop(x, 100)


def test_the_policy_crop_is_the_old_per_sample_crop():
    """The vectorised crop draws the same windows as the per-sample loop it replaced, from the
    same two randint calls, so training stays bit-identical."""
    x = torch.randint(0, 256, (5, 3, 32, 32, 3), dtype=torch.uint8)
    torch.manual_seed(7)
    got = _crop(x, 28, random=True)
    torch.manual_seed(7)
    tops = torch.randint(0, 5, (5,)).tolist()
    lefts = torch.randint(0, 5, (5,)).tolist()
    want = torch.stack(
        [x[b, :, t : t + 28, s : s + 28] for b, (t, s) in enumerate(zip(tops, lefts))]
    )
    assert torch.equal(got, want)
    assert torch.equal(_crop(x, 28, random=False), x[:, :, 2:30, 2:30])
    assert _crop(x, 32, random=True) is x
