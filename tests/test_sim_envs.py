"""Sim tasks: spaces, seeded resets, experts, end-effector delta mode (real MuJoCo and robosuite)."""

from __future__ import annotations

import numpy as np
import pytest

from robot_policy.sim import list_tasks, make_env, make_expert

LOWDIM = ("joint_pos", "joint_vel", "gripper", "ee_pos", "ee_quat", "object")


@pytest.fixture(scope="module")
def tabletop():
    env = make_env("tabletop", cameras={"agentview": (48, 64), "wrist": (32, 32)}, randomization="default")
    yield env
    env.close()


def _check_obs(env, obs):
    space = env.observation_space
    assert set(obs) == set(space.spaces)
    for key, value in obs.items():
        sub = space.spaces[key]
        assert value.shape == sub.shape, key
        assert value.dtype == sub.dtype, key
        if key.endswith("_rgb"):
            assert value.dtype == np.uint8 and value.ndim == 3 and value.shape[2] == 3
        else:
            assert value.dtype == np.float32 and np.all(np.isfinite(value)), key


def test_registry_lists_all_tasks():
    assert {"tabletop", "lift", "stack", "pick_place_can"} <= set(list_tasks())
    with pytest.raises(KeyError, match="known: .*lift"):
        make_env("no_such_task")


def test_tasks_experts_gymnasium_and_task_class_come_from_one_table():
    import gymnasium as gym

    from robot_policy.sim import EXPERTS, TASK_TABLE, TASKS, task_class

    assert TASKS.names() == EXPERTS.names() == sorted(TASK_TABLE)
    for name, entry in TASK_TABLE.items():
        assert gym.spec(f"robot_policy/{name}-v0").entry_point == entry.env
    cls = task_class("tabletop")
    assert cls.__name__ == "TabletopEnv" and cls.default_cameras
    with pytest.raises(KeyError, match="known: .*lift"):
        task_class("no_such_task")


def test_tabletop_reset_step_spaces_and_images(tabletop):
    env = tabletop
    u = env.unwrapped
    obs, info = env.reset(seed=3)
    _check_obs(env, obs)
    assert info["seed"] == 3 and info["success"] is False
    n = len(u.joint_names)
    assert env.action_space.shape == (n + 1,)
    assert np.allclose(env.action_space.low[:n], u.joint_lower)
    assert obs["agentview_rgb"].shape == (48, 64, 3) and obs["wrist_rgb"].shape == (32, 32, 3)
    # A real image: not a constant colour.
    assert obs["agentview_rgb"].std() > 5
    action = np.concatenate([obs["joint_pos"], [-1.0]]).astype(np.float32)
    action[0] += 0.2
    for _ in range(15):
        obs, reward, terminated, truncated, info = env.step(action)
    _check_obs(env, obs)
    assert isinstance(info["success"], bool) and reward == float(info["success"])
    assert abs(obs["joint_pos"][0] - action[0]) < 0.05  # position control tracks the absolute target
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full(n + 1, np.nan))


def test_seeded_reset_is_reproducible(tabletop):
    a, _ = tabletop.reset(seed=11)
    b, _ = tabletop.reset(seed=11)
    c, _ = tabletop.reset(seed=12)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.allclose(a["object"][:3], c["object"][:3])


@pytest.mark.parametrize("task", ["lift", "stack", "pick_place_can"])
def test_robosuite_tasks_reset_and_step(task):
    env = make_env(task)
    obs, _ = env.reset(seed=0)
    _check_obs(env, obs)
    assert env.unwrapped.object_dim == (14 if task == "stack" else 7)
    assert env.unwrapped.control_hz == 20.0
    hold = np.concatenate([obs["joint_pos"], [-1.0]]).astype(np.float32)
    obs, _, _, truncated, info = env.step(hold)
    _check_obs(env, obs)
    assert info["success"] is False and truncated is False
    # Holding the current posture keeps the arm still.
    assert np.abs(obs["joint_pos"] - hold[:7]).max() < 0.02
    env.close()


def test_robosuite_camera_is_uint8_hwc():
    env = make_env("lift", cameras={"agentview": (40, 56)})
    obs, _ = env.reset(seed=1)
    img = obs["agentview_rgb"]
    assert img.dtype == np.uint8 and img.shape == (40, 56, 3) and img.std() > 5
    with pytest.raises(ValueError, match="no camera"):
        make_env("tabletop", cameras={"nope": (8, 8)})
    env.close()


def _rollout(env, expert, seed):
    obs, _ = env.reset(seed=seed)
    expert.reset(seed)
    for _ in range(env.unwrapped.max_episode_steps):
        obs, _, _, truncated, info = env.step(expert.act(obs))
        if info["success"]:
            return True
    return False


@pytest.mark.parametrize(
    ("task", "seeds"), [("tabletop", [0, 1, 2]), ("lift", [5, 6]), ("stack", [7, 8]), ("pick_place_can", [9])]
)
def test_expert_succeeds_under_default_randomization(task, seeds):
    env = make_env(task, randomization="default")
    expert = make_expert(task, env)
    assert all(_rollout(env, expert, s) for s in seeds)
    env.close()


def test_ee_delta_action_mode_moves_end_effector():
    env = make_env("tabletop", action_mode="ee_delta")
    assert env.action_space.shape == (7,)
    obs, _ = env.reset(seed=0)
    start = obs["ee_pos"].copy()
    for _ in range(10):
        obs, *_ = env.step(np.array([0.2, 0, 0, 0, 0, 0, -1], dtype=np.float32))
    moved = obs["ee_pos"] - start
    # 10 steps x 1 cm commanded relative to the measured pose; tracking lag makes it a bit less.
    assert moved[0] > 0.03 and abs(moved[1]) < 0.01 and abs(moved[2]) < 0.01
    with pytest.raises(ValueError, match="joint"):
        make_expert("tabletop", env)


def test_tasks_are_registered_with_gymnasium():
    import warnings

    import gymnasium as gym

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium's passive env checker warns on contract violations
        env = gym.make("robot_policy/tabletop-v0", cameras={"wrist": (16, 16)})
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        obs, *_ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
    env.close()


def test_headless_rendering_even_if_mujoco_was_imported_first():
    """mujoco picks its GL backend at import; without MUJOCO_GL that is GLFW, which needs a display."""
    import os
    import subprocess
    import sys

    code = (
        "import mujoco\n"
        "from robot_policy.sim import make_env\n"
        "env = make_env('tabletop', cameras={'agentview': (24, 24)})\n"
        "obs, _ = env.reset(seed=0)\n"
        "assert obs['agentview_rgb'].std() > 5\n"
        "print('rendered')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "rendered" in out.stdout
