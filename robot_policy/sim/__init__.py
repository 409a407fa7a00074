"""Simulated tasks as gymnasium environments, scripted experts, domain randomization.

```python
from robot_policy.sim import make_env, make_expert, list_tasks
env = make_env("lift", cameras={"agentview": (84, 84)}, randomization="sim/randomization/default.yaml")
obs, info = env.reset(seed=3)
expert = make_expert("lift", env); expert.reset(3)
obs, reward, terminated, truncated, info = env.step(expert.act(obs))   # info["success"]
```

Tasks: ``tabletop`` (native MuJoCo scene in ``sim/tabletop.xml``, default twin of the ROS sim
robot), ``lift``, ``stack`` and ``pick_place_can`` (robosuite 1.5.1). A new task is one row of
``TASK_TABLE`` (env and expert entry points); ``TASKS``, ``EXPERTS``, ``task_class`` and the gymnasium
ids ``robot_policy/<task>-v0`` all derive from it.
"""

from __future__ import annotations

from typing import NamedTuple

from robot_policy.registry import Registry
from robot_policy.sim.render import ensure_gl_backend

ensure_gl_backend()  # must run before anything imports mujoco's GL layer


class TaskEntry(NamedTuple):
    """Where a task's classes live, as ``"module:attr"`` (imported only when first used)."""

    env: str
    """The gymnasium env class."""
    expert: str
    """The scripted expert class."""


# The one table of tasks: TASKS, EXPERTS, task_class and the gymnasium ids derive from it.
TASK_TABLE: dict[str, TaskEntry] = {
    "tabletop": TaskEntry("robot_policy.sim.tabletop:TabletopEnv", "robot_policy.sim.experts:LiftExpert"),
    # The tabletop with a ChArUco board on the table / in the hand: hand-eye calibration in simulation.
    "tabletop_board": TaskEntry(
        "robot_policy.sim.board_tabletop:BoardTabletopEnv", "robot_policy.sim.experts:LiftExpert"
    ),
    "tabletop_held_board": TaskEntry(
        "robot_policy.sim.board_tabletop:HeldBoardTabletopEnv", "robot_policy.sim.experts:LiftExpert"
    ),
    "lift": TaskEntry("robot_policy.sim.robosuite_tasks:LiftEnv", "robot_policy.sim.experts:LiftExpert"),
    "stack": TaskEntry("robot_policy.sim.robosuite_tasks:StackEnv", "robot_policy.sim.experts:StackExpert"),
    "pick_place_can": TaskEntry(
        "robot_policy.sim.robosuite_tasks:PickPlaceCanEnv", "robot_policy.sim.experts:PickPlaceExpert"
    ),
}


def _load(entry_point: str):
    """``"module:attr"`` -> the object (imports the module, e.g. robosuite, only now)."""
    import importlib

    module, attr = entry_point.split(":")
    return getattr(importlib.import_module(module), attr)


def _lazy(entry_point: str):
    """A factory that imports ``entry_point`` on its first call, so registering costs nothing."""

    def factory(*args, **kwargs):
        return _load(entry_point)(*args, **kwargs)

    return factory


TASKS: Registry = Registry("sim task")
EXPERTS: Registry = Registry("sim expert")
for _name, _entry in TASK_TABLE.items():
    TASKS.register(_name)(_lazy(_entry.env))
    EXPERTS.register(_name)(_lazy(_entry.expert))


def _register_gymnasium() -> None:
    """Also visible to gymnasium: ``gym.make("robot_policy/lift-v0", cameras=..., randomization=...)``."""
    import gymnasium as gym

    for name, entry in TASK_TABLE.items():
        env_id = f"robot_policy/{name}-v0"
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry.env)


_register_gymnasium()


def list_tasks() -> list[str]:
    return TASKS.names()


def task_class(task: str):
    """The env class of ``task`` (class attributes: control_hz, default_cameras, ...) without building it."""
    TASKS.get(task)  # unknown names fail here, listing the known ones
    return _load(TASK_TABLE[task].env)


def make_env(
    task: str,
    cameras: dict[str, tuple[int, int]] | None = None,
    randomization=None,
    seed: int | None = None,
    action_mode: str = "joint",
):
    """Build a task env.

    Args:
        task: one of ``list_tasks()``.
        cameras: ``{camera_name: (height, width)}``; each adds an ``<name>_rgb`` uint8 HxWx3 observation.
        randomization: None (off), a YAML path or bare name in ``sim/randomization/``, a dict, or a
            ``RandomizationConfig``.
        seed: seed of the first reset when ``reset()`` gets none.
        action_mode: ``"joint"`` (absolute joint targets + gripper) or ``"ee_delta"`` (dpos, drot, gripper in [-1, 1]).
    """
    return TASKS.get(task)(cameras=cameras, randomization=randomization, seed=seed, action_mode=action_mode)


def make_expert(task: str, env, noise: float = 1.0):
    """Scripted expert for ``task`` driving ``env`` (which must use ``action_mode='joint'``)."""
    if env.unwrapped.action_mode != "joint":
        raise ValueError(
            "scripted experts emit absolute joint targets: build the env with action_mode='joint'"
        )
    return EXPERTS.get(task)(env, noise=noise)


__all__ = [
    "TASK_TABLE",
    "TaskEntry",
    "TASKS",
    "EXPERTS",
    "make_env",
    "make_expert",
    "list_tasks",
    "task_class",
]
