"""Free MuJoCo render contexts in their own OpenGL context, whenever that happens.

A MuJoCo render context (`mjrContext`) is a set of GL object names (textures, framebuffers,
display lists) that are small integers counted per GL context, so two contexts use the same
names. `mjr_freeContext` deletes those names in whatever GL context is *current*. robosuite
(`MjRenderContext.__del__`) and `mujoco.Renderer.close` free without making their own
context current first, and their EGL `free()` ends with `eglReleaseThread()`, which unbinds
whatever context *was* current. When that runs from the garbage collector (an env that was
never closed, or one half-built by a constructor that raised: robosuite's sim and render
context reference each other, so only the cyclic collector frees them), it happens at an
arbitrary moment, typically while another env is rendering: that env then loses its
framebuffer/textures or its current context and returns garbage images.

`free_render_context(gl_context, mjr_context)` makes the right context current, frees,
destroys, and puts back the binding that was current before (unless it was the freed one).
`Renderer` here (mujoco's, for PointCue) and `robosuite_tasks.RenderContext` (robosuite's) use
it in `close()` and when the garbage collector frees them. No robosuite import here.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import mujoco


def _egl():
    if os.environ.get("MUJOCO_GL", "").lower() != "egl":
        return None
    from mujoco.egl import egl_ext as EGL  # the same libEGL robosuite's contexts use

    return EGL


def _address(ptr: Any) -> int | None:
    return ctypes.cast(ptr, ctypes.c_void_p).value if ptr else None


def _current(EGL: Any) -> tuple | None:
    ctx = EGL.eglGetCurrentContext()
    if not ctx:
        return None
    draw, read = EGL.eglGetCurrentSurface(EGL.EGL_DRAW), EGL.eglGetCurrentSurface(EGL.EGL_READ)
    return EGL.eglGetCurrentDisplay(), draw, read, ctx


def free_render_context(gl_context: Any, mjr_context: Any) -> None:
    """Free `mjr_context` (a `mujoco.MjrContext`) inside `gl_context` (robosuite's or mujoco's
    GL context: `make_current()` / `free()`), then destroy `gl_context`. The EGL context that
    was current before is current again afterwards, unless it was the one destroyed."""
    if gl_context is None:  # no GL backend of our own: nothing better than freeing in place
        if mjr_context is not None:
            mjr_context.free()
        return
    EGL = _egl()
    before = _current(EGL) if EGL is not None else None
    if mjr_context is not None:
        gl_context.make_current()
        mjr_context.free()  # zeroes the ids: a later free (destructor) is a no-op
    freed = _address(getattr(gl_context, "_context", None))
    gl_context.free()  # ends with eglReleaseThread(): nothing is current now
    if before is not None and _address(before[3]) != freed:
        EGL.eglMakeCurrent(*before)


class Renderer(mujoco.Renderer):
    """`mujoco.Renderer` whose `close()` (and collection) frees in its own GL context."""

    def close(self) -> None:
        gl_ctx = self.__dict__.get("_gl_context")
        con = self.__dict__.get("_mjr_context")
        self._gl_context = None
        self._mjr_context = None
        if gl_ctx is not None or con is not None:
            free_render_context(gl_ctx, con)
