"""The one task registry (`envs/registry.py`) and import without side effects: real modules,
real fresh interpreters, real MuJoCo / robosuite rendering."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import registry
from envs.env_args import make_from_env_args

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter at the repository root, without the variables `unset`."""
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


GL_VARS = ("MUJOCO_GL", "PYOPENGL_PLATFORM")


def test_importing_the_packages_sets_nothing_and_loads_no_simulator():
    code = (
        "import os, sys, envs, ttm_policy, train, eval\n"
        "assert not {'MUJOCO_GL', 'PYOPENGL_PLATFORM'} & set(os.environ), os.environ\n"
        "assert not {'mujoco', 'robosuite', 'OpenGL'} & set(sys.modules)\n"
        "assert 'ttm/LiftCued-v0' in __import__('gymnasium').registry\n"
    )
    r = _python(code, unset=GL_VARS)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("module", ["envs.cued_tasks", "envs.robosuite_tasks", "envs.point_cue"])
def test_each_env_module_imports_first_in_a_fresh_process(module):
    """No import cycle: each module can be the first one imported."""
    r = _python(f"import {module}", unset=GL_VARS)
    assert r.returncode == 0, r.stderr


def test_an_env_made_without_mujoco_gl_renders_what_it_renders_with_egl(tmp_path):
    """MUJOCO_GL unset: making PointCue and Lift (both renderers in one process) chooses EGL,
    and the images equal those made here with MUJOCO_GL=egl; robosuite's render-context class
    is left as robosuite has it."""
    code = (
        "import os, numpy as np, gymnasium as gym, envs\n"
        "p = gym.make('ttm/PointCue-v0', image_size=16)\n"
        "lift = gym.make('ttm/Lift-v0', cameras=('agentview',), image_size=16)\n"
        "a = p.reset(seed=3)[0]['agentview_image']\n"
        "b = lift.reset(seed=3)[0]['agentview_image']\n"
        "p.close(); lift.close()\n"
        f"np.save({str(tmp_path / 'point.npy')!r}, a); np.save({str(tmp_path / 'lift.npy')!r}, b)\n"
        "import robosuite.environments.base as base, robosuite.utils.binding_utils as bu\n"
        "assert base.MjRenderContextOffscreen is bu.MjRenderContextOffscreen\n"
        "print(os.environ['MUJOCO_GL'], os.environ['PYOPENGL_PLATFORM'])\n"
    )
    r = _python(code, unset=GL_VARS)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-2:] == ["egl", "egl"]
    p = gym.make("ttm/PointCue-v0", image_size=16)
    lift = gym.make("ttm/Lift-v0", cameras=("agentview",), image_size=16)
    expected = {
        "point": p.reset(seed=3)[0]["agentview_image"],
        "lift": lift.reset(seed=3)[0]["agentview_image"],
    }
    p.close()
    lift.close()
    for name, image in expected.items():
        got = np.load(tmp_path / f"{name}.npy", allow_pickle=False)
        assert image.std() > 5  # a real scene, not a blank frame
        np.testing.assert_array_equal(got, image, err_msg=name)


def test_robosuite_render_context_class_is_not_patched():
    import robosuite.environments.base as base
    import robosuite.utils.binding_utils as bu

    from envs.robosuite_tasks import LiftEnv, RenderContext

    env = LiftEnv(cameras=("agentview",), image_size=16, render_quality="robosuite")
    env.reset(seed=0)
    assert isinstance(env.suite.sim._render_context_offscreen, RenderContext)  # ours, safely freed
    assert base.MjRenderContextOffscreen is bu.MjRenderContextOffscreen  # robosuite's, for others
    env.close()


def test_mujoco_imported_before_the_backend_was_chosen_fails_clearly():
    code = (
        "import envs, mujoco, gymnasium as gym\n"
        "env = gym.make('ttm/PointCue-v0', cameras=())\n"
        "env.reset(seed=0)\n"  # no images: no renderer, works
        "env = gym.make('ttm/PointCue-v0')\n"
        "env.reset(seed=0)\n"
    )
    r = _python(code, unset=GL_VARS)
    assert r.returncode != 0
    assert "mujoco was imported before MUJOCO_GL=egl was set" in r.stderr


@pytest.mark.parametrize("name", list(envs.TASKS))
def test_every_entry_is_complete(name):
    """Each entry names a loadable env class and expert, its gymnasium id makes that class,
    `cued` says what the class says, and a robosuite task's name is its robosuite env name."""
    spec = envs.task_spec(name)
    cls, expert = registry.load(spec.env), registry.load(spec.expert)
    assert isinstance(cls, type) and issubclass(cls, gym.Env)
    assert callable(getattr(expert, "act", None)) and callable(getattr(expert, "reset", None))
    assert gym.spec(envs.task_id(name)).entry_point == spec.env
    assert spec.cued == (getattr(cls, "cues", None) is not None)
    if hasattr(cls, "ENV_NAME"):
        assert name == cls.ENV_NAME


def test_the_env_makes_the_expert_its_entry_names():
    env = gym.make(envs.task_id("PointCue"), cameras=())
    expert = env.unwrapped.make_expert(noise=0.0, seed=0)
    assert type(expert) is registry.load(envs.task_spec("PointCue").expert)
    env.close()


def test_unknown_task_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown task 'Nope'; known tasks: Lift, Stack"):
        envs.task_spec("Nope")
    with pytest.raises(ValueError, match="unknown task 'Nope'"):
        envs.task_id("Nope")


def test_a_registered_task_that_is_not_robosuite_is_not_a_robosuite_env_args():
    with pytest.raises(ValueError, match="'PointCue' is not a task here; known: .*'PlaceCued'"):
        make_from_env_args({"env_name": "PointCue", "type": 1, "env_kwargs": {}})


TWO_CAMERAS = ("agentview", "robot0_eye_in_hand")


@pytest.mark.parametrize(
    "task, expected",
    [  # (episodes, image_size, cameras, delay_steps): the recipes the results were made with
        ("PointCue", (200, 32, None, None)),
        ("Lift", (100, 64, TWO_CAMERAS, None)),
        ("PickPlaceCan", (100, 64, TWO_CAMERAS, None)),
        ("LiftCued", (100, 64, TWO_CAMERAS, 10)),
        ("PlaceCued", (100, 64, TWO_CAMERAS, 10)),
    ],
)
def test_the_quickstart_takes_the_recipe_of_the_entry(task, expected):
    """Collection follows the task's entry; training steps are ttm-train's default (the
    recipe is the default), whatever the task."""
    from eval.quickstart import QuickstartConfig, resolved
    from train.train import TrainConfig

    r = envs.task_spec(task).recipe
    assert (r.episodes, r.image_size, r.cameras, r.delay_steps) == expected
    cfg = resolved(QuickstartConfig(task=task))
    steps = TrainConfig(dataset="x.hdf5").steps
    assert (cfg.episodes, cfg.image_size, cfg.delay_steps, cfg.steps) == (
        expected[0],
        expected[1],
        expected[3],
        steps,
    )
    given = resolved(QuickstartConfig(task=task, episodes=7, steps=9, delay_steps=0))
    assert (given.episodes, given.steps, given.delay_steps) == (7, 9, 0)
