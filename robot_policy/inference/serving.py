"""One serving config: how a checkpoint is served, on the robot and in evaluation.

``ServingConfig`` composes the engine settings (``EngineConfig``, with its warm start) and the
chunk scheduler settings (``SchedulerConfig``), plus the simulated clock of evaluation. Every
place that serves a policy takes its settings from it, so each setting is declared, typed,
documented and validated once:

* the policy node declares its ROS parameters from it (``exposed(defaults, "ros")``),
* ``robot-policy eval`` generates its flags from it (``add_serving_args``),
* ``robot-policy bench inference`` generates its engine flags from the same table.

User-facing names predate this module (``num_inference_steps`` on the node, ``--steps`` on the
CLI) and launch files, docs and scripts use them, so ``SETTINGS`` maps each name to a field;
type, help text and validation come from the dataclass field. No torch here: ``--help`` and
the scheduler stay light.
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import re
import textwrap
import typing
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

from robot_policy.inference.scheduler import SchedulerConfig
from robot_policy.inference.warmstart import WarmStartConfig

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
_DEVICE = re.compile(r"(auto|cpu|cuda(:\d+)?)")


@dataclass(frozen=True)
class EngineConfig:
    """How the inference engine runs a policy."""

    device: str = "auto"
    """'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when available)."""
    num_steps: int = 0
    """Denoising / integration steps per call (0: the policy's default)."""
    sampler: str = ""
    """Sampler override: diffusion 'ddpm'/'ddim'/'dpmsolver++', flow 'euler'/'midpoint'/'heun' ('' = policy default)."""
    precision: Precision = "auto"
    """'fp32', 'bf16' (validated against fp32) or 'auto': bf16 on CUDA and on CPUs with native bf16
    (AVX512-BF16/AMX) if validation passes, else fp32."""
    bf16_tolerance: float = 0.05
    """Largest accepted bf16-vs-fp32 error in normalized action units ([-1, 1] range); above it: fp32."""
    cuda_graph: bool = True
    """Record the whole pipeline as CUDA graphs (CUDA only); falls back to eager if capture fails."""
    channels_last: bool = True
    """Channels-last memory format for convolutional image encoders."""
    compile: bool = False
    """torch.compile the encoder and denoiser (slow first load; needs a C++ compiler on CPU)."""
    threads: int = 0
    """CPU threads for torch (0: leave torch's default)."""
    warmup: int = 2
    """Warm-up calls per configuration at load (CUDA graph capture happens here)."""
    seed: int | None = None
    """Seed of the engine's noise generator (None: nondeterministic)."""
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    """RTI-DP warm start: start from the previous plan, noised to an intermediate level."""

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"EngineConfig.precision: {self.precision!r} is not one of {list(PRECISIONS)}")
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(f"EngineConfig.device: {self.device!r} is not 'auto', 'cpu', 'cuda' or 'cuda:N'")
        for name in ("num_steps", "threads", "warmup"):
            if getattr(self, name) < 0:
                raise ValueError(f"EngineConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not self.bf16_tolerance >= 0:
            raise ValueError(f"EngineConfig.bf16_tolerance must be >= 0, got {self.bf16_tolerance}")


@dataclass(frozen=True)
class ServingConfig:
    """How a checkpoint is served: inference engine, chunk scheduler, simulated clock."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    """The inference engine: device, sampler steps, precision, warm start."""
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    """Chunk execution: mode, RTC, latency estimate. Its ``n_action_steps`` is replaced by the
    policy's wherever a policy is served (``scheduler_for``)."""
    simulated_latency: str = "measured"
    """Evaluation in async mode: inference latency on the simulated clock, 'measured' (real
    compute time of each call) or fixed seconds, e.g. '0.08' (emulates a faster or slower machine)."""
    use_prior: bool = True
    """Hand the scheduled plan to ``predict(prior=...)`` (used by warm start and RTC, ignored otherwise)."""

    def __post_init__(self):
        self.latency_seconds(0.0)  # a bad spec fails here, not in the middle of an evaluation

    def latency_seconds(self, measured: float) -> float:
        """Simulated latency of a call whose compute took ``measured`` seconds."""
        if self.simulated_latency == "measured":
            return measured
        try:
            value = float(self.simulated_latency)
        except ValueError:
            raise ValueError(
                "ServingConfig.simulated_latency: expected 'measured' or seconds (e.g. '0.08'), "
                f"got {self.simulated_latency!r}"
            ) from None
        if not value >= 0:
            raise ValueError(f"ServingConfig.simulated_latency must be >= 0 seconds, got {value}")
        return value

    def scheduler_for(self, n_action_steps: int) -> SchedulerConfig:
        """The scheduler settings with the served policy's receding horizon."""
        return replace(self.scheduler, n_action_steps=int(n_action_steps))


# ---------------------------------------------------------------- user-facing names of the fields
@dataclass(frozen=True)
class Setting:
    """A field of ``ServingConfig`` that users set by name."""

    path: str
    """Dotted field path in ``ServingConfig``, e.g. 'engine.warm_start.run_steps'."""
    ros: str | None
    """Parameter name on ``policy_node`` (None: not a node parameter)."""
    cli: str | None
    """Command-line flag (None: not a flag)."""


SETTINGS: tuple[Setting, ...] = (
    Setting("engine.device", "device", "--device"),
    Setting("engine.threads", "torch_threads", "--threads"),
    Setting("engine.num_steps", "num_inference_steps", "--steps"),
    Setting("engine.sampler", "sampler", "--sampler"),
    Setting("engine.precision", "precision", "--precision"),
    Setting("engine.warm_start.run_steps", "warm_start_steps", "--warm-start"),
    Setting("engine.warm_start.schedule_steps", "warm_schedule_steps", "--warm-schedule"),
    Setting("scheduler.mode", "scheduler_mode", "--mode"),
    Setting("scheduler.rtc", "rtc", "--rtc"),
    Setting("simulated_latency", None, "--latency"),  # a robot's latency is real
)
Surface = Literal["ros", "cli"]


@dataclass(frozen=True)
class Exposed:
    """One setting as a surface shows it: its name there, with type, default and help from the field."""

    name: str
    """ROS parameter name or CLI flag."""
    path: str
    """Dotted field path in ``ServingConfig``."""
    type: object
    """The field's annotation (``int``, ``bool``, a ``Literal``...)."""
    default: object
    """The value in the surface's defaults."""
    doc: str
    """The field's docstring, on one line."""


@functools.cache
def _field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` of a dataclass: the string literal right after each field."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    return {
        a.target.id: " ".join(b.value.value.split())
        for a, b in zip(body, body[1:])
        if isinstance(a, ast.AnnAssign)
        and isinstance(a.target, ast.Name)
        and isinstance(b, ast.Expr)
        and isinstance(b.value, ast.Constant)
        and isinstance(b.value.value, str)
    }


def _leaf(path: str) -> tuple[type, str, object]:
    """(owning dataclass, field name, annotation) of a dotted field path."""
    cls, *parents, name = [ServingConfig, *path.split(".")]
    for p in parents:
        cls = typing.get_type_hints(cls)[p]
    return cls, name, typing.get_type_hints(cls)[name]


def _get(cfg, path: str):
    for p in path.split("."):
        cfg = getattr(cfg, p)
    return cfg


def exposed(defaults: ServingConfig, surface: Surface, only: tuple[str, ...] | None = None) -> list[Exposed]:
    """The settings a surface offers (all of its names in ``SETTINGS``, or ``only`` these names)."""
    out = []
    for s in SETTINGS:
        name = getattr(s, surface)
        if name is None or (only is not None and name not in only):
            continue
        cls, fname, tp = _leaf(s.path)
        out.append(Exposed(name, s.path, tp, _get(defaults, s.path), _field_docs(cls)[fname]))
    return out


def _updated(cfg, updates: dict[tuple[str, ...], object]):
    """``cfg`` with ``{field path: value}`` applied; each nested config is rebuilt (and validated)
    once with all of its changes, so the order of the updates does not matter."""
    direct = {p[0]: v for p, v in updates.items() if len(p) == 1}
    nested: dict[str, dict] = {}
    for p, v in updates.items():
        if len(p) > 1:
            nested.setdefault(p[0], {})[p[1:]] = v
    for name, sub in nested.items():
        direct[name] = _updated(getattr(cfg, name), sub)
    return replace(cfg, **direct)


def configure(defaults: ServingConfig, surface: Surface, values: dict[str, object]) -> ServingConfig:
    """``defaults`` with ``{parameter or flag name: value}`` applied (unknown names are an error)."""
    by_name = {e.name: e for e in exposed(defaults, surface)}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        raise ValueError(f"unknown serving setting(s) {unknown}; valid: {sorted(by_name)}")
    try:
        return _updated(defaults, {tuple(by_name[n].path.split(".")): v for n, v in values.items()})
    except ValueError as e:
        # The dataclass names the field; the user typed a parameter or flag name.
        given = ", ".join(f"{n}={v!r}" for n, v in values.items() if v != by_name[n].default)
        raise ValueError(f"{e} (set: {given or 'defaults'})") from None


# -------------------------------------------------------------------------------- argparse
def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_serving_args(
    parser, defaults: ServingConfig, only: tuple[str, ...] | None = None, title: str = "serving"
) -> None:
    """Add the serving flags (all, or ``only`` these) as an argument group, defaults from ``defaults``."""
    g = parser.add_argument_group(f"{title} (docs/inference.md)")
    for e in exposed(defaults, "cli", only):
        kw: dict = {"default": e.default, "help": e.doc.replace("%", "%%") + " [default: %(default)r]"}
        if e.type is bool:
            kw["action"] = "store_true" if not e.default else argparse.BooleanOptionalAction
        elif typing.get_origin(e.type) is Literal:
            kw["choices"] = list(get_args(e.type))
        elif e.type in (int, float, str):
            kw["type"] = e.type
        else:
            raise TypeError(f"SETTINGS: {e.path} has type {e.type!r}, which has no command-line form")
        g.add_argument(e.name, **kw)


def serving_from_args(args, defaults: ServingConfig, only: tuple[str, ...] | None = None) -> ServingConfig:
    """The ``ServingConfig`` of flags added by ``add_serving_args`` with the same arguments."""
    return configure(
        defaults, "cli", {e.name: getattr(args, _dest(e.name)) for e in exposed(defaults, "cli", only)}
    )
