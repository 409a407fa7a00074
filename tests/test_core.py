"""Core utilities: config validation, registry, CLI discovery."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from robot_policy import conventions as conv
from robot_policy.cli.main import build_parser, main
from robot_policy.config import ConfigError, from_dict, to_dict
from robot_policy.registry import Registry
from robot_policy.types import ActionChunk


@dataclass
class Inner:
    gain: float = 1.0
    """A gain."""


@dataclass
class Outer:
    name: str
    """A name."""
    steps: int = 3
    """Step count."""
    inner: Inner = field(default_factory=Inner)
    """Nested block."""
    ranges: dict[str, list[float]] = field(default_factory=dict)
    """Named ranges."""
    mode: str | None = None
    """Optional mode."""


def test_from_dict_builds_nested_and_converts_ints_to_float():
    cfg = from_dict(Outer, {"name": "a", "inner": {"gain": 2}, "ranges": {"m": [0, 1.5]}})
    assert cfg.inner.gain == 2.0 and isinstance(cfg.inner.gain, float)
    assert cfg.ranges == {"m": [0.0, 1.5]}
    assert to_dict(cfg)["inner"]["gain"] == 2.0


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"name": "a", "stpes": 3}, "stpes"),
        ({"name": "a", "steps": "three"}, "Outer.steps"),
        ({"name": "a", "inner": {"gain": "x"}}, "Outer.inner.gain"),
        ({"name": "a", "steps": True}, "Outer.steps"),
        ({}, "name"),
    ],
)
def test_from_dict_names_the_bad_field(data, needle):
    with pytest.raises(ConfigError, match=needle):
        from_dict(Outer, data)


def test_registry_register_get_and_unknown_lists_known():
    reg: Registry[type] = Registry("camera")

    @reg.register("sim")
    class Sim:
        pass

    assert reg.get("sim") is Sim and "sim" in reg and reg.names() == ["sim"]
    with pytest.raises(KeyError, match="known: sim"):
        reg.get("uvc")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("sim")(Sim)


def test_conventions_image_keys_and_joint_state_keys():
    assert conv.image_key("agentview") == "agentview_rgb"
    assert conv.camera_of("robot0_eye_in_hand_rgb") == "robot0_eye_in_hand"
    assert conv.is_image_key("wrist_rgb") and not conv.is_image_key("joint_pos")
    assert not conv.is_image_key("_rgb")  # no camera name
    with pytest.raises(ValueError, match="'object'.*<camera>_rgb"):
        conv.camera_of("object")
    assert conv.joint_state_keys(gripper=True) == ["joint_pos", "joint_vel", "gripper"]
    assert conv.joint_state_keys(gripper=False) == ["joint_pos", "joint_vel"]
    assert conv.color_topic("front") == "/front/color/image_raw"
    assert conv.depth_info_topic("front") == "/front/depth/camera_info"


def test_conventions_seed_reply_round_trips_and_names_a_bad_reply():
    assert conv.format_seed(17) == "seed=17"
    assert conv.parse_seed(conv.format_seed(17)) == 17
    assert conv.parse_seed("seed=3 steps=40 success_now=True") == 3
    assert conv.parse_seed("episode seed=-2") == -2
    for bad in ("ok", "seed=", "seed=x", "myseed=4"):
        with pytest.raises(ValueError, match="no 'seed=N'"):
            conv.parse_seed(bad)


def test_conventions_is_a_foundation_module():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(conv))
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if m.startswith("robot_policy")]


def test_action_chunk_times():
    chunk = ActionChunk(actions=np.zeros((4, 2), np.float32), start_time=1.0, dt=0.1)
    np.testing.assert_allclose(chunk.times(), [1.0, 1.1, 1.2, 1.3])
    assert len(chunk) == 4


def test_cli_help_lists_groups_and_group_without_subcommand_prints_help(capsys):
    parser = build_parser()
    text = parser.format_help()
    assert "bench" in text
    assert main(["bench"]) == 2
    assert "SUBCOMMAND" in capsys.readouterr().out
