"""Domain randomization: typed config, seeded draws, application to the MuJoCo model, adaptive schedule.

A config (``sim/randomization/*.yaml``) gives a ``[low, high]`` range per parameter. At every
reset the env draws one value per parameter from the episode seed (so an episode is reproducible
from its seed alone) and stores the draw as a flat mapping ``parameter -> value`` in the
episode metadata. Visuals are randomized through ``geom_rgba``/``mat_rgba``, lights and camera
pose/fov directly on the model (robosuite's own colour randomizer asserts mujoco 3.1.1).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_policy import resources
from robot_policy.config import ConfigError, from_dict, load_config, to_dict

# Shipped configs: the checkout's sim/randomization/, else the installed package's copy.
RANDOMIZATION_DIR = resources.data_path("sim/randomization")
DEFAULT_RANDOMIZATION = RANDOMIZATION_DIR / "default.yaml"


def _rng(lo, hi):
    return field(default_factory=lambda: [lo, hi])


def _bounded(default, lo, hi, nominal, integer=False):
    """A [low, high] range field whose values must lie in [lo, hi]; ``nominal`` = no randomization."""
    return field(
        default_factory=lambda: list(default),
        metadata={"bounds": (lo, hi), "nominal": nominal, "integer": integer},
    )


@dataclass
class DynamicsConfig:
    """Physical parameters, as multipliers of the model's nominal values."""

    object_mass_scale: list[float] = _bounded([1.0, 1.0], 0.05, 20.0, 1.0)
    """Multiplier on the mass of the task objects, [low, high]."""
    friction_scale: list[float] = _bounded([1.0, 1.0], 0.05, 10.0, 1.0)
    """Multiplier on the sliding friction of every geom, [low, high]."""
    joint_damping_scale: list[float] = _bounded([1.0, 1.0], 0.0, 20.0, 1.0)
    """Multiplier on the arm joints' damping, [low, high]."""
    actuator_gain_scale: list[float] = _bounded([1.0, 1.0], 0.1, 5.0, 1.0)
    """Multiplier on the arm's position-control gains (kp), [low, high]."""


@dataclass
class ControlConfig:
    """Imperfections of the control loop."""

    action_latency_steps: list[int] = _bounded([0, 0], 0, 20, 0, integer=True)
    """Actions execute this many control steps late (integer, drawn uniformly from [low, high])."""
    action_noise_std: list[float] = _bounded([0.0, 0.0], 0.0, 0.5, 0.0)
    """Std of Gaussian noise added to joint targets (rad), [low, high]."""
    obs_noise_std: list[float] = _bounded([0.0, 0.0], 0.0, 0.5, 0.0)
    """Std of Gaussian noise added to proprioception and object positions, [low, high]."""


@dataclass
class VisualConfig:
    """Appearance: lights, colours, cameras."""

    light_diffuse_scale: list[float] = _bounded([1.0, 1.0], 0.0, 5.0, 1.0)
    """Multiplier on every light's diffuse colour, [low, high]."""
    light_pos_offset: list[float] = _bounded([0.0, 0.0], -5.0, 5.0, 0.0)
    """Offset (m) added to each light position axis, [low, high]."""
    object_rgb_offset: list[float] = _bounded([0.0, 0.0], -1.0, 1.0, 0.0)
    """Offset added to each RGB channel of the task objects' colour (geom_rgba or mat_rgba), [low, high]."""
    table_rgb_offset: list[float] = _bounded([0.0, 0.0], -1.0, 1.0, 0.0)
    """Offset added to each RGB channel of the table's colour, [low, high]."""
    camera_pos_offset: list[float] = _bounded([0.0, 0.0], -0.5, 0.5, 0.0)
    """Offset (m) added to each camera position axis, [low, high]."""
    camera_rot_deg: list[float] = _bounded([0.0, 0.0], -30.0, 30.0, 0.0)
    """Rotation (degrees) about each camera axis, [low, high]."""
    camera_fovy_offset_deg: list[float] = _bounded([0.0, 0.0], -30.0, 30.0, 0.0)
    """Offset (degrees) added to each camera's vertical field of view, [low, high]."""


@dataclass
class RandomizationConfig:
    """Domain randomization ranges, drawn once per episode from its seed."""

    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    """Physical parameters."""
    control: ControlConfig = field(default_factory=ControlConfig)
    """Latency and noise."""
    visuals: VisualConfig = field(default_factory=VisualConfig)
    """Lights, colours and cameras."""

    def __post_init__(self):
        validate(self)


GROUPS = ("dynamics", "control", "visuals")


def _fields(cfg: RandomizationConfig):
    """(group, field, [low, high]) for every range, in a fixed order."""
    for group in GROUPS:
        sub = getattr(cfg, group)
        for f in dataclasses.fields(sub):
            yield group, f, getattr(sub, f.name)


def validate(cfg: RandomizationConfig, where: str = "randomization") -> None:
    """Raise ConfigError naming the field when a range is malformed or out of its physical bounds."""
    for group, f, rng in _fields(cfg):
        name = f"{where}.{group}.{f.name}"
        if not isinstance(rng, (list, tuple)) or len(rng) != 2:
            raise ConfigError(f"{name}: expected [low, high], got {rng!r}")
        lo, hi = rng
        if f.metadata["integer"] and not all(isinstance(v, int) and not isinstance(v, bool) for v in rng):
            raise ConfigError(f"{name}: expected two integers [low, high], got {rng!r}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in rng):
            raise ConfigError(f"{name}: expected two finite numbers [low, high], got {rng!r}")
        if lo > hi:
            raise ConfigError(f"{name}: low {lo} is greater than high {hi}; write [low, high]")
        blo, bhi = f.metadata["bounds"]
        if lo < blo or hi > bhi:
            raise ConfigError(f"{name}: range {rng} leaves the allowed interval [{blo}, {bhi}]")


def load_randomization(path: str | Path) -> RandomizationConfig:
    """Load and validate a randomization YAML; a bare name is looked up in ``sim/randomization/``."""
    try:
        p = resources.find_file(path, "sim/randomization", (".yaml", ".yml"), what="randomization file")
    except resources.ResourceNotFoundError as e:
        looked = ", ".join(str(x) for x in e.looked)
        raise ConfigError(
            f"randomization file {path} does not exist (looked at: {looked}); shipped configs: "
            f"{e.available}; give the path of your own YAML or one of these names"
        ) from None
    try:
        return load_config(RandomizationConfig, p)
    except ConfigError as e:
        # Range checks run in __post_init__, which does not know the file: name it here.
        msg = str(e)
        if msg.startswith("randomization."):
            raise ConfigError(f"{p}.{msg[len('randomization.') :]}") from None
        raise


def _tint(rgb: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Add a colour offset; shift down when a channel would pass 1 so the hue change survives.

    A white (1, 1, 1) textured material can only be tinted darker (mat_rgba multiplies the
    texture): plain clipping would erase every positive offset.
    """
    out = rgb + offset
    out -= max(0.0, float(out.max()) - 1.0)
    return np.clip(out, 0.0, 1.0)


class Randomizer:
    """Draws parameter values from a config and writes them into an env's model."""

    def __init__(self, cfg: RandomizationConfig | None):
        self.cfg = cfg
        self._nominal: dict[str, np.ndarray] | None = None

    @classmethod
    def from_any(cls, spec, env=None) -> Randomizer:
        if spec is None or isinstance(spec, Randomizer):
            return spec or cls(None)
        if isinstance(spec, RandomizationConfig):
            return cls(spec)
        if isinstance(spec, dict):
            return cls(from_dict(RandomizationConfig, spec, where="randomization"))
        return cls(load_randomization(spec))

    def draw(self, rng: np.random.Generator, camera_names: list[str] | None = None) -> dict[str, float]:
        """One flat ``parameter -> value`` draw. Empty when randomization is off."""
        if self.cfg is None:
            return {}
        out: dict[str, float] = {}
        for group, f, (lo, hi) in _fields(self.cfg):
            key = f"{group}.{f.name}"
            if f.metadata["integer"]:
                out[key] = int(rng.integers(lo, hi + 1))
            elif f.name.endswith(("_offset", "_deg")) and f.name != "camera_fovy_offset_deg":
                # Per-axis / per-channel parameters: three independent draws.
                for axis in ("x", "y", "z") if "rgb" not in f.name else ("r", "g", "b"):
                    out[f"{key}.{axis}"] = float(rng.uniform(lo, hi))
            else:
                out[key] = float(rng.uniform(lo, hi))
        return out

    def _snapshot(self, env) -> None:
        m = env.model
        self._nominal = {
            k: getattr(m, k).copy()
            for k in (
                "body_mass",
                "body_inertia",
                "geom_friction",
                "dof_damping",
                "light_diffuse",
                "light_pos",
                "geom_rgba",
                "mat_rgba",
                "cam_pos",
                "cam_quat",
                "cam_fovy",
            )
        }

    def apply(self, env, draw: dict[str, float]) -> None:
        """Restore the nominal model, then write ``draw`` into it."""
        import mujoco

        if self._nominal is None:
            self._snapshot(env)
        m = env.model
        for k, v in self._nominal.items():
            getattr(m, k)[:] = v
        env.set_gain_scale(float(draw.get("dynamics.actuator_gain_scale", 1.0)))
        if not draw:
            return
        mass = draw["dynamics.object_mass_scale"]
        for b in env.object_body_ids:
            m.body_mass[b] *= mass
            m.body_inertia[b] *= mass
        m.geom_friction[:, 0] *= draw["dynamics.friction_scale"]
        m.dof_damping[env.dof_adr] *= draw["dynamics.joint_damping_scale"]

        m.light_diffuse[:] = np.clip(m.light_diffuse * draw["visuals.light_diffuse_scale"], 0, 1)
        m.light_pos[:] += [draw[f"visuals.light_pos_offset.{a}"] for a in "xyz"]
        for geoms, key in (
            (env.object_geom_ids, "object_rgb_offset"),
            (env.table_geom_ids, "table_rgb_offset"),
        ):
            offset = np.array([draw[f"visuals.{key}.{c}"] for c in "rgb"])
            mats = {int(m.geom_matid[g]) for g in geoms if m.geom_matid[g] >= 0}
            for g in geoms:
                if m.geom_matid[g] < 0:
                    m.geom_rgba[g, :3] = _tint(self._nominal["geom_rgba"][g, :3], offset)
            for mat in mats:
                m.mat_rgba[mat, :3] = _tint(self._nominal["mat_rgba"][mat, :3], offset)
        pos_off = np.array([draw[f"visuals.camera_pos_offset.{a}"] for a in "xyz"])
        rot = np.deg2rad([draw[f"visuals.camera_rot_deg.{a}"] for a in "xyz"])
        dq = np.zeros(4)
        mujoco.mju_axisAngle2Quat(dq, rot / (np.linalg.norm(rot) or 1.0), float(np.linalg.norm(rot)))
        for c in range(m.ncam):
            m.cam_pos[c] += pos_off
            q = np.zeros(4)
            mujoco.mju_mulQuat(q, self._nominal["cam_quat"][c], dq)
            m.cam_quat[c] = q
            m.cam_fovy[c] = np.clip(m.cam_fovy[c] + draw["visuals.camera_fovy_offset_deg"], 5.0, 170.0)


def scaled_config(target: RandomizationConfig, scale: float) -> RandomizationConfig:
    """Ranges shrunk (scale < 1) or widened (scale > 1) about each parameter's nominal value.

    scale = 0 is no randomization, 1 is ``target`` itself; results are clipped to each field's bounds.
    """
    data = to_dict(target)
    for group, f, (lo, hi) in _fields(target):
        nom = f.metadata["nominal"]
        blo, bhi = f.metadata["bounds"]
        new = [min(max(nom + scale * (v - nom), blo), bhi) for v in (lo, hi)]
        if f.metadata["integer"]:
            new = [int(round(new[0])), int(round(new[1]))]
        data[group][f.name] = new
    return from_dict(RandomizationConfig, data, where="randomization")


@dataclass
class AdaptiveSchedule:
    """DORAEMON-style curriculum: widen the ranges while the success rate holds, shrink when it falls.

    DORAEMON (Tiboni et al., ICLR 2024) maximizes the entropy of the randomization distribution
    subject to a success-rate constraint. This simple version moves one scalar, the fraction
    ``scale`` of the target ranges, multiplicatively after each evaluation round.
    """

    target: RandomizationConfig
    threshold: float = 0.8
    scale: float = 0.25
    grow: float = 1.5
    shrink: float = 0.7
    min_scale: float = 0.05
    max_scale: float = 1.0
    history: list = field(default_factory=list)

    def __post_init__(self):
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"AdaptiveSchedule.threshold: {self.threshold} is not in [0, 1]")
        if not (self.grow > 1.0 and 0.0 < self.shrink < 1.0):
            raise ConfigError("AdaptiveSchedule: need grow > 1 and 0 < shrink < 1")

    def current(self) -> RandomizationConfig:
        return scaled_config(self.target, self.scale)

    def update(self, success_rate: float) -> RandomizationConfig:
        """Feed one evaluation result (success rate under ``current()``); returns the next config."""
        before = self.scale
        if success_rate >= self.threshold:
            self.scale = min(self.max_scale, self.scale * self.grow)
        else:
            self.scale = max(self.min_scale, self.scale * self.shrink)
        self.history.append({"scale": before, "success_rate": float(success_rate), "next_scale": self.scale})
        return self.current()

    def run(self, evaluate, rounds: int) -> RandomizationConfig:
        """``evaluate(config) -> success_rate`` for ``rounds`` rounds; returns the final config."""
        for _ in range(rounds):
            self.update(evaluate(self.current()))
        return self.current()

    def save(self, path: str | Path) -> None:
        state = {k: v for k, v in dataclasses.asdict(self).items() if k != "target"}
        state["target"] = to_dict(self.target)
        Path(path).write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> AdaptiveSchedule:
        state = json.loads(Path(path).read_text())
        state["target"] = from_dict(RandomizationConfig, state["target"], where=str(path))
        return cls(**state)
