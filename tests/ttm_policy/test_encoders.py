"""The image tokenizer's GroupNorm: the same numbers and gradients as torch's, in the memory
layout the convolutions around it want."""

import torch
from torch import nn

from ttm_policy.encoders import ConvTokenizer, GroupNorm


def test_group_norm_equals_torchs_on_channels_last_input_and_keeps_the_layout():
    torch.manual_seed(0)
    ours, ref = GroupNorm(4, 8), nn.GroupNorm(4, 8)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5), ours.bias.uniform_(-0.5, 0.5)
    ref.load_state_dict(ours.state_dict())  # the same keys
    x = torch.randn(6, 8, 9, 9).contiguous(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = ours(xa), ref(xb)
    assert ya.is_contiguous(memory_format=torch.channels_last) and not ya.is_contiguous()
    torch.testing.assert_close(ya, yb)
    g = torch.randn_like(yb)
    ya.backward(g), yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad)
    plain = torch.randn(2, 8, 5, 5)  # an NCHW input stays NCHW
    assert ours(plain).is_contiguous()
    torch.testing.assert_close(ours(plain), ref(plain))
    wide, wide_ref = GroupNorm(2, 8), nn.GroupNorm(2, 8)  # 4 per group: torch's own path
    torch.testing.assert_close(wide(x), wide_ref(x))
    assert wide(x).is_contiguous(memory_format=torch.channels_last)


def test_the_tokenizer_gives_the_same_tokens_with_torchs_group_norm():
    """Swapping torch's GroupNorm back in (as in checkpoints written before) changes nothing."""
    torch.manual_seed(0)
    enc = ConvTokenizer(dim=16, image_size=28, num_tokens=4, channels=(8, 8, 16, 16))
    images = torch.randint(0, 256, (5, 28, 28, 3), dtype=torch.uint8)
    ours = enc(images)
    for i, m in enumerate(enc.trunk):
        if isinstance(m, GroupNorm):
            ref = nn.GroupNorm(m.num_groups, m.num_channels)
            ref.load_state_dict(m.state_dict())
            enc.trunk[i] = ref
    torch.testing.assert_close(enc(images), ours)
