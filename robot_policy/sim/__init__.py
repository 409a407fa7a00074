"""Simulated tasks as gymnasium environments, scripted experts, domain randomization.

```python
from robot_policy.sim import make_env, make_expert, list_tasks
env = make_env("lift", cameras={"agentview": (84, 84)}, randomization="sim/randomization/default.yaml")
obs, info = env.reset(seed=3)
expert = make_expert("lift", env); expert.reset(3)
obs, reward, terminated, truncated, info = env.step(expert.act(obs))   # info["success"]
```

Tasks: ``tabletop`` (native MuJoCo scene in ``sim/tabletop.xml``, default twin of the ROS sim
robot), ``lift``, ``stack`` and ``pick_place_can`` (robosuite 1.5.1). Backends register in ``TASKS``/``EXPERTS``.
"""

from __future__ import annotations

from robot_policy.registry import Registry
from robot_policy.sim.render import ensure_gl_backend

ensure_gl_backend()  # must run before anything imports mujoco's GL layer

TASKS: Registry = Registry("sim task")
EXPERTS: Registry = Registry("sim expert")


def _lazy(module: str, attr: str):
    """Register by name without importing robosuite until a task is actually built."""

    def factory(*args, **kwargs):
        import importlib

        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    return factory


TASKS.register("tabletop")(_lazy("robot_policy.sim.tabletop", "TabletopEnv"))
TASKS.register("lift")(_lazy("robot_policy.sim.robosuite_tasks", "LiftEnv"))
TASKS.register("stack")(_lazy("robot_policy.sim.robosuite_tasks", "StackEnv"))
TASKS.register("pick_place_can")(_lazy("robot_policy.sim.robosuite_tasks", "PickPlaceCanEnv"))
EXPERTS.register("tabletop")(_lazy("robot_policy.sim.experts", "LiftExpert"))
EXPERTS.register("lift")(_lazy("robot_policy.sim.experts", "LiftExpert"))
EXPERTS.register("stack")(_lazy("robot_policy.sim.experts", "StackExpert"))
EXPERTS.register("pick_place_can")(_lazy("robot_policy.sim.experts", "PickPlaceExpert"))

# Also visible to gymnasium: gym.make("robot_policy/lift-v0", cameras=..., randomization=...).
_ENTRY_POINTS = {
    "tabletop": "robot_policy.sim.tabletop:TabletopEnv",
    "lift": "robot_policy.sim.robosuite_tasks:LiftEnv",
    "stack": "robot_policy.sim.robosuite_tasks:StackEnv",
    "pick_place_can": "robot_policy.sim.robosuite_tasks:PickPlaceCanEnv",
}


def _register_gymnasium() -> None:
    import gymnasium as gym

    for name, entry in _ENTRY_POINTS.items():
        env_id = f"robot_policy/{name}-v0"
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry)


_register_gymnasium()


def list_tasks() -> list[str]:
    return TASKS.names()


def task_class(task: str):
    """The env class of ``task`` (class attributes: control_hz, default_cameras, ...) without building it."""
    import importlib

    TASKS.get(task)  # unknown names fail here, listing the known ones
    module, attr = _ENTRY_POINTS[task].split(":")
    return getattr(importlib.import_module(module), attr)


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


__all__ = ["TASKS", "EXPERTS", "make_env", "make_expert", "list_tasks", "task_class"]
