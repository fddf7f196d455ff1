"""OpenGL for the envs: choose the backend, and free render contexts in their own GL context.

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
`planar.Renderer` (mujoco's) and `robosuite_tasks.RenderContext` (robosuite's) use it in
`close()` and when the garbage collector frees them.

`setup()` chooses the GL backend: MUJOCO_GL defaults to `egl` (headless; Mesa llvmpipe on a
CPU, the GPU where there is one) and PYOPENGL_PLATFORM follows it; values already set win.
MuJoCo and robosuite read MUJOCO_GL once, when they are first imported (`mujoco.gl_context`,
`robosuite.utils.binding_utils`), so the env modules call it before importing them, and the
console scripts at the start of `main`. Importing this module imports neither (nor sets
anything), so `setup()` can run first. Where mujoco was imported too early anyway,
`check_mujoco_backend()` (PointCue, before its renderer) says so instead of "gladLoadGL error".

`egl_device(cuda_ordinal)` says which EGL device renders next to a CUDA device, and
`renderer_info()` what GL renderer a context really gets (`ttm-eval` records it in eval.json,
so a GPU machine that silently renders with llvmpipe shows).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from typing import Any


def setup() -> None:
    """Headless rendering unless the user chose: MUJOCO_GL=egl and PYOPENGL_PLATFORM=MUJOCO_GL
    where unset. Must run before mujoco or robosuite is imported (see the module docstring)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


def check_mujoco_backend() -> None:
    """Raise RuntimeError, saying how to fix it, when mujoco picked another GL backend than
    MUJOCO_GL now names: it was imported before `setup()` ran (directly, or through robosuite)
    and would render with GLFW, which needs a display (mujoco only says "gladLoadGL error")."""
    import mujoco

    want = os.environ.get("MUJOCO_GL", "").lower()
    got = getattr(mujoco.GLContext, "__module__", "")
    if want in ("egl", "osmesa") and not got.startswith(f"mujoco.{want}"):
        raise RuntimeError(
            f"mujoco was imported before MUJOCO_GL={want} was set, and renders with {got!r}; "
            f"set MUJOCO_GL={want} in the environment, or call envs.gl.setup() (or import the "
            "env module) before importing mujoco or robosuite"
        )


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


def egl_device(cuda_ordinal: int, environ: Mapping[str, str] = os.environ) -> int | None:
    """The EGL device index to render on next to CUDA device `cuda_ordinal` (torch's index).

    EGL enumerates every GPU of the machine and ignores CUDA_VISIBLE_DEVICES, so ordinal k is
    the k-th entry of CUDA_VISIBLE_DEVICES (the ordinal itself when it is unset). A set
    MUJOCO_EGL_DEVICE_ID wins: the user chose. None (EGL's own choice) where no index can be
    known: CUDA_VISIBLE_DEVICES naming GPUs by UUID or MIG instance, or too short. This
    assumes EGL numbers GPUs in the driver's (PCI bus) order, as CUDA does with
    CUDA_DEVICE_ORDER=PCI_BUS_ID; eval.json's renderer string shows what was used.
    """
    chosen = environ.get("MUJOCO_EGL_DEVICE_ID", "").strip()
    if chosen:
        return int(chosen)
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return cuda_ordinal
    entries = [v.strip() for v in visible.split(",") if v.strip()]
    if cuda_ordinal >= len(entries) or not entries[cuda_ordinal].isdigit():
        return None
    return int(entries[cuda_ordinal])


def renderer_info(device: int | None = None) -> dict[str, Any]:
    """GL_RENDERER, GL_VENDOR and GL_VERSION of a real context made as the envs make theirs
    (MUJOCO_GL; with EGL on `device`, else on MUJOCO_EGL_DEVICE_ID or the first device that
    initialises). The context that was current before is current again afterwards. Never
    raises: where no context can be made, `error` says why."""
    setup()  # the backend the envs' modules choose, also where none was imported here
    backend = os.environ.get("MUJOCO_GL", "").lower() or None
    info: dict[str, Any] = {"backend": backend, "egl_device": device}
    try:
        from OpenGL import GL

        if backend == "egl":
            info.update(_egl_strings(device, GL))
        else:  # osmesa / glfw: mujoco's own context
            import mujoco

            ctx = mujoco.GLContext(1, 1)
            try:
                ctx.make_current()
                info.update(_gl_strings(GL))
            finally:
                ctx.free()
    except Exception as e:  # noqa: BLE001  (recording must never stop an evaluation)
        info["error"] = f"{type(e).__name__}: {e}"
    return info


def _gl_strings(GL: Any) -> dict[str, str]:
    names = {"renderer": GL.GL_RENDERER, "vendor": GL.GL_VENDOR, "version": GL.GL_VERSION}
    return {k: GL.glGetString(v).decode(errors="replace") for k, v in names.items()}


def _egl_strings(device: int | None, GL: Any) -> dict[str, str]:
    from mujoco.egl import EGL_ATTRIBUTES
    from mujoco.egl import egl_ext as EGL

    if device is None and os.environ.get("MUJOCO_EGL_DEVICE_ID", "").strip():
        device = int(os.environ["MUJOCO_EGL_DEVICE_ID"])
    devices = EGL.eglQueryDevicesEXT()
    if device is not None and not 0 <= device < len(devices):
        raise RuntimeError(f"EGL device {device} does not exist ({len(devices)} devices)")
    display = None
    for dev in devices if device is None else devices[device : device + 1]:
        d = EGL.eglGetPlatformDisplayEXT(EGL.EGL_PLATFORM_DEVICE_EXT, dev, None)
        if d != EGL.EGL_NO_DISPLAY and EGL.eglInitialize(d, None, None) == EGL.EGL_TRUE:
            display = d  # not terminated: the envs' contexts may share this display
            break
    if display is None:
        raise RuntimeError(f"no EGL device display initialises (device {device})")
    configs, n = (EGL.EGLConfig * 1)(), ctypes.c_long()
    EGL.eglChooseConfig(display, EGL_ATTRIBUTES, configs, 1, n)
    if n.value < 1:
        raise RuntimeError("EGL found no framebuffer configuration")
    before = _current(EGL)
    EGL.eglBindAPI(EGL.EGL_OPENGL_API)
    ctx = EGL.eglCreateContext(display, configs[0], EGL.EGL_NO_CONTEXT, None)
    if not ctx:
        raise RuntimeError("eglCreateContext failed")
    try:
        if not EGL.eglMakeCurrent(display, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, ctx):
            raise RuntimeError("eglMakeCurrent failed")
        return _gl_strings(GL)
    finally:
        if before is not None:
            EGL.eglMakeCurrent(*before)
        else:
            EGL.eglMakeCurrent(display, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, EGL.EGL_NO_CONTEXT)
        EGL.eglDestroyContext(display, ctx)
