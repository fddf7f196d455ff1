"""Which EGL device renders next to which CUDA device (`envs.gl.egl_device`)."""

import pytest

from envs.gl import egl_device


@pytest.mark.parametrize(
    "environ,ordinal,expected",
    [
        ({}, 0, 0),  # every GPU visible: EGL index = CUDA index
        ({}, 3, 3),
        ({"CUDA_VISIBLE_DEVICES": "2,3"}, 0, 2),  # CUDA renumbers the visible GPUs from 0
        ({"CUDA_VISIBLE_DEVICES": "2,3"}, 1, 3),
        ({"CUDA_VISIBLE_DEVICES": " 5 "}, 0, 5),
        ({"CUDA_VISIBLE_DEVICES": "2,3", "MUJOCO_EGL_DEVICE_ID": "1"}, 1, 1),  # user's choice
        ({"MUJOCO_EGL_DEVICE_ID": "4"}, 0, 4),
        ({"CUDA_VISIBLE_DEVICES": "GPU-8f2a1c3e-aaaa-bbbb-cccc-0123456789ab"}, 0, None),
        ({"CUDA_VISIBLE_DEVICES": "MIG-GPU-8f2a1c3e/1/0"}, 0, None),  # no index to map
        ({"CUDA_VISIBLE_DEVICES": "1"}, 1, None),  # more ordinals than visible GPUs
    ],
)
def test_egl_device_maps_the_cuda_ordinal_through_cuda_visible_devices(environ, ordinal, expected):
    assert egl_device(ordinal, environ) == expected
