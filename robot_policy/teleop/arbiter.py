"""The intervention arbiter: between the policy and the robot, the human's command wins at once.

ROS-free core of ``arbiter_node`` (and of the in-process DAgger loop). Inputs, each with the
time it happened on the graph clock:

- ``policy_chunk``: a timed chunk from the policy (a JointTrajectory: start stamp = capture time
  of the observation it answers, times from start, points in command order);
- ``teleop``: the human's latest command (joint targets + gripper, command order) and whether
  they are intervening now;
- ``executed``: the command the robot actually sent on a tick (``/joint_commands``), and
  ``state``: each measured joint state's stamp (``/joint_states``, the recorder's frames).

States (``Source``):

- ``POLICY``: chunks pass through unchanged (the robot's trajectory executor runs them).
- ``HUMAN``: from the first intervening message on, every human command is forwarded at once as
  a position target; that replaces the robot's trajectory, so the policy's pending chunk is
  dropped there and here. Chunks the policy keeps sending are kept only as its "shadow"
  proposal (for the record), never forwarded.
- ``HANDBACK``: the human let go. The arm holds the human's last target until a policy chunk
  that answers an observation captured after the release arrives (an older one was planned
  from a state the human has since changed); that chunk, and the ones after it until they
  agree with the arm, are rate-limited from the command the robot last executed, at
  ``handback_speed`` times the hardware velocity limits: control returns without a jump.
- ``HOLD``: the device went silent while the human had control (unplugged, crashed): the arm
  holds where it is, the policy does not take over by itself, and the error says so. The next
  teleop message (device back) resolves it.

The record: for every command the robot executed (stamp ``c``), the recorder's frame is the
joint state captured just before it (the recorder pairs frame ``t`` with the first command after
``t``). :meth:`executed` returns a :class:`StepRecord` for that frame: ``intervention`` (the
human's command was in force at ``c``), the policy's proposal for ``c`` and the source. Both
come from the same executed command, so the flags mark exactly the steps whose action came from
the human.

Which command was in force is the robot's word, not a guess from timing: every command the
arbiter sends carries a tag (``Forward.tag``, ``Trajectory.tag``: ``arbiter:<source>:<n>``),
the robot reports with each executed command the tag of the command in force
(``robot_node``: ``/joint_commands`` header ``frame_id``), and the arbiter looks it up. A switch
reaches the robot some milliseconds after the arbiter decided (DDS delivery, measured 2-15 ms on
a loaded machine) and the robot's tick may run late, so timing alone cannot tell on which tick a
takeover took effect. Only a robot that echoes no tag gets the timing estimate
(:meth:`Arbiter.source_at`, ``command_latency_s``). The proposal is the plan of the chunk in
force when the robot executed a policy chunk, otherwise (the human drove) the newest plan the
arbiter had received by ``c``; NaN before any chunk.
"""

from __future__ import annotations

import bisect
import enum
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from robot_policy.hardware.config import HardwareConfig
from robot_policy.teleop.base import TeleopError

TAG_PREFIX = "arbiter:"
"""Tags of the arbiter's commands: ``arbiter:<source>:<n>``."""
KEEP_TAGS = 2048
"""Commands remembered for the robot's echo (about a minute of chunks and holds at 20 Hz)."""
KEEP_PLANS = 64
"""Policy chunks remembered for proposals sampled at past execution times."""


class Source(enum.IntEnum):
    """Who commands the arm (published as a number on the arbiter's step topic)."""

    POLICY = 0
    HUMAN = 1
    HANDBACK = 2
    HOLD = 3


@dataclass
class ArbiterConfig:
    """Intervention arbiter settings (``arbiter_node`` parameters of the same names)."""

    handback_speed: float = 0.5
    """During the handback the arm moves toward the policy's plan at most this fraction of the
    hardware velocity limits (the safety layer below allows the full limits)."""
    handback_tolerance: float = 0.01
    """rad: the handback ends with the first chunk the rate limit no longer changes by more."""
    handback_max_s: float = 3.0
    """The handback ends after this long even if chunks still disagree with the arm (s)."""
    teleop_timeout_s: float = 0.5
    """No teleop message for this long while the human has control: the device is gone; hold."""
    fresh_command_s: float = 0.15
    """On the intervening flag, a human command this recent is forwarded at once; an older one
    is stale (from a previous intervention) and the arm holds until the next one."""
    command_latency_s: float = 0.002
    """Only for a robot that does not echo command tags on ``/joint_commands``: the assumed
    arbiter-to-robot delivery time (a switch counts from the robot's ticks after it)."""

    def __post_init__(self) -> None:
        if not 0 < self.handback_speed <= 1:
            raise TeleopError(f"arbiter handback_speed must be in (0, 1], got {self.handback_speed}")
        for name in ("handback_tolerance", "handback_max_s", "teleop_timeout_s", "fresh_command_s"):
            if getattr(self, name) <= 0:
                raise TeleopError(f"arbiter {name} must be > 0, got {getattr(self, name)}")
        if self.command_latency_s < 0:
            raise TeleopError(f"arbiter command_latency_s must be >= 0, got {self.command_latency_s}")


@dataclass
class Forward:
    """Send one position target (command order) to the robot's forward command input."""

    target: np.ndarray
    tag: str = ""
    """Send it with the command; the robot echoes it while the command is in force."""


@dataclass
class Trajectory:
    """Send a timed trajectory: ``points`` (T, D) reached at ``start + time_from_start``."""

    start: float
    time_from_start: np.ndarray
    points: np.ndarray
    tag: str = ""
    """As :attr:`Forward.tag`."""


@dataclass
class StepRecord:
    """What the arbiter publishes per recorded frame (stamp = the frame's joint-state stamp)."""

    stamp: float
    intervention: bool
    policy_action: np.ndarray
    source: Source
    interventions: int
    """Interventions begun so far this episode."""


@dataclass
class EpisodeCounts:
    """Per-episode intervention counters (reset by :meth:`Arbiter.reset_episode`)."""

    interventions: int = 0
    """Times the human took control."""
    intervention_steps: int = 0
    """Executed steps whose command came from the human."""
    intervention_s: float = 0.0
    """Time under human control (s), closed interventions plus the open one."""
    starts: list[float] = field(default_factory=list)
    """Graph-clock time at which each intervention began."""
    handbacks: int = 0
    holds: int = 0
    """Times the device went silent while the human had control."""


class Plan:
    """The policy's latest chunk on absolute times: what it proposes at any instant."""

    def __init__(self, times: np.ndarray, points: np.ndarray, origin: float):
        self.times = times
        self.points = points
        self.origin = origin

    def sample(self, t: float) -> np.ndarray:
        ts, ps = self.times, self.points
        if t <= ts[0]:
            return ps[0].copy()
        if t >= ts[-1]:
            return ps[-1].copy()
        i = int(np.searchsorted(ts, t, side="right"))
        a = (t - ts[i - 1]) / (ts[i] - ts[i - 1])
        return (1 - a) * ps[i - 1] + a * ps[i]


class Arbiter:
    """Decides, per input, what goes to the robot (see the module docstring). Not thread-safe:
    the node calls it under one lock."""

    def __init__(self, hw: HardwareConfig, config: ArbiterConfig | None = None):
        self.hw = hw
        self.cfg = config or ArbiterConfig()
        self.dim = hw.command_dim
        self.n_arm = len(hw.joint_names)
        self.vmax = np.asarray(hw.velocity_limits, dtype=np.float64) * self.cfg.handback_speed
        self.source = Source.POLICY
        self.plan: Plan | None = None
        self.counts = EpisodeCounts()
        self.error = ""
        """Why the arm holds (device silent), until the next teleop message."""
        self._switches: list[tuple[float, Source]] = [(-np.inf, Source.POLICY)]
        self._states: list[float] = []  # recent joint-state stamps (frames)
        self._human: tuple[float, np.ndarray] | None = None  # (arrival, target) of the last command
        self._last_teleop = -np.inf
        self._executed: np.ndarray | None = None
        self._since = 0.0  # start of the current HUMAN / HANDBACK period
        self._released_at = -np.inf
        self._hold: np.ndarray | None = None
        self._waiting = False  # HANDBACK: no chunk forwarded since the release yet (keep holding)
        self.forwarded_chunks = 0
        self.shadow_chunks = 0
        self.limited_chunks = 0
        self.stale_chunks = 0
        self._seq = 0
        self._tags: OrderedDict[str, tuple[Source, Plan | None]] = OrderedDict()  # tag -> what it was
        self._plans: list[tuple[float, Plan]] = []  # (arrival, plan), oldest first
        self.echoed_steps = 0
        """Executed steps attributed by the robot's echo of the command tag."""
        self.timed_steps = 0
        """Executed steps attributed by timing (no or an unknown tag)."""

    def _tag(self, out, source: Source, plan: Plan | None = None):
        """Give an outgoing command its tag and remember what it was."""
        self._seq += 1
        out.tag = f"{TAG_PREFIX}{source.name.lower()}:{self._seq}"
        self._tags[out.tag] = (source, plan)
        while len(self._tags) > KEEP_TAGS:
            self._tags.popitem(last=False)
        return out

    # -- state changes ---------------------------------------------------------------------
    def _switch(self, source: Source, now: float) -> None:
        if source == self.source:
            return
        if self.source == Source.HUMAN:
            self.counts.intervention_s += max(0.0, now - self._since)
        if source == Source.HUMAN:
            self.counts.interventions += 1
            self.counts.starts.append(now)
        elif source == Source.HANDBACK:
            self.counts.handbacks += 1
            self._released_at = now
        elif source == Source.HOLD:
            self.counts.holds += 1
        self.source = source
        self._since = now
        self._switches.append((now, source))
        del self._switches[:-64]

    def source_at(self, t: float) -> Source:
        """Who commanded at graph time ``t`` (what a robot tick at ``t`` executed)."""
        i = bisect.bisect_right([s[0] for s in self._switches], t - self.cfg.command_latency_s) - 1
        return self._switches[max(i, 0)][1]

    def reset_episode(self) -> None:
        """A new episode: counters restart; the current source stays (a human may hold on)."""
        self.counts = EpisodeCounts()

    # -- inputs ----------------------------------------------------------------------------
    def policy_chunk(self, start: float, time_from_start, points, now: float) -> Trajectory | None:
        """A chunk from the policy; returns what to send to the robot (None: nothing)."""
        tfs = np.asarray(time_from_start, dtype=np.float64).reshape(-1)
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape != (len(tfs), self.dim) or len(tfs) == 0:
            raise TeleopError(
                f"policy chunk must be (T, {self.dim}) points with T times, got {pts.shape} and {len(tfs)} times"
            )
        start = now if start <= 0 else float(start)
        self.plan = plan = Plan(start + tfs, pts, origin=start)
        self._plans.append((now, plan))
        del self._plans[:-KEEP_PLANS]
        if self.source in (Source.HUMAN, Source.HOLD):
            self.shadow_chunks += 1
            return None
        if self.source == Source.HANDBACK:
            if start < self._released_at - 1e-9:
                # Planned from an observation before the release: the human has moved the arm since.
                self.stale_chunks += 1
                return None
            out, changed = self._limit(start, tfs, pts, now)
            self._waiting = False
            self.limited_chunks += 1
            if not changed or now - self._since > self.cfg.handback_max_s:
                self._switch(Source.POLICY, now)
            self.forwarded_chunks += 1
            return self._tag(out, Source.HANDBACK, plan)
        self.forwarded_chunks += 1
        return self._tag(Trajectory(start, tfs, pts), Source.POLICY, plan)

    def _limit(self, start: float, tfs: np.ndarray, pts: np.ndarray, now: float) -> tuple[Trajectory, bool]:
        """The chunk's future points, each moved at most ``vmax * dt`` from the previous one,
        starting at the command the robot last executed (arm joints; the gripper as planned)."""
        t = start + tfs
        keep = t > now
        if not keep.any():
            keep[-1] = True
        t, pts = t[keep], pts[keep].copy()
        prev_t = now
        prev = self._executed if self._executed is not None else self._hold
        if prev is None:
            return Trajectory(start, t - start, pts), False
        prev = prev[: self.n_arm].copy()
        changed = False
        for i in range(len(t)):
            step = self.vmax * max(t[i] - prev_t, 0.0)
            want = pts[i, : self.n_arm]
            got = prev + np.clip(want - prev, -step, step)
            changed |= bool(np.max(np.abs(got - want)) > self.cfg.handback_tolerance)
            pts[i, : self.n_arm] = got
            prev, prev_t = got, t[i]
        return Trajectory(start, t - start, pts), changed

    def teleop(self, target, intervening: bool, now: float) -> Forward | None:
        """A teleop message: ``target`` (command order, None for a flag alone) and the flag."""
        if target is not None:
            target = np.asarray(target, dtype=np.float64).reshape(-1)
            if target.shape[0] != self.dim or not np.all(np.isfinite(target)):
                raise TeleopError(
                    f"teleop command must be {self.dim} finite values ({', '.join(self.hw.command_names)}), "
                    f"got {target.tolist()}"
                )
            self._human = (now, target)
        self._last_teleop = now
        if self.source == Source.HOLD:
            self.error = ""
        if intervening:
            if self.source != Source.HUMAN:
                self._switch(Source.HUMAN, now)
                fresh = self._human is not None and now - self._human[0] <= self.cfg.fresh_command_s
                if not fresh:
                    # A flag before its command: stop the policy's motion now, where the arm is.
                    hold = self._hold_target()
                    return self._tag(Forward(hold), Source.HUMAN) if hold is not None else None
                return self._tag(Forward(self._human[1].copy()), Source.HUMAN)
            return self._tag(Forward(target.copy()), Source.HUMAN) if target is not None else None
        if self.source in (Source.HUMAN, Source.HOLD):
            self._switch(Source.HANDBACK, now)
            last = self._human[1] if self._human is not None else self._hold_target()
            self._hold = None if last is None else last.copy()
            self._waiting = True
            return self._tag(Forward(self._hold.copy()), Source.HANDBACK) if self._hold is not None else None
        return None

    def _hold_target(self) -> np.ndarray | None:
        return None if self._executed is None else self._executed.copy()

    def state(self, stamp: float, now: float) -> Forward | None:
        """A measured joint state (a recorder frame). Also the arbiter's tick: detects a silent
        device and keeps a holding arm commanded (no watchdog trip while it waits)."""
        self._states.append(float(stamp))
        del self._states[:-200]
        if self.source == Source.HUMAN and now - self._last_teleop > self.cfg.teleop_timeout_s:
            self._switch(Source.HOLD, now)
            self._hold = self._hold_target()
            self.error = (
                f"teleop device silent for {now - self._last_teleop:.2f} s while the human had control "
                "(unplugged or crashed?): the arm holds where it is and the policy does not take over "
                "until the device sends again (an intervening=false message hands control back)"
            )
        waiting = self.source == Source.HOLD or (self.source == Source.HANDBACK and self._waiting)
        if waiting and self._hold is not None:
            if self.source == Source.HANDBACK and now - self._since > self.cfg.handback_max_s:
                self.error = (
                    f"no policy chunk planned after the release within {self.cfg.handback_max_s:g} s: "
                    "holding (is the policy running and told of the intervention?)"
                )
            return self._tag(Forward(self._hold.copy()), self.source)
        return None

    def executed(self, command, stamp: float, tag: str = "") -> StepRecord | None:
        """The robot executed ``command`` (command order) on its tick at ``stamp``, ``tag`` being
        the tag of the command in force there as the robot reports it ("" from a robot that does
        not echo tags). Returns the record of the frame that command answers (None before the
        first joint state)."""
        cmd = np.asarray(command, dtype=np.float64).reshape(-1)
        if cmd.shape[0] == self.dim:
            self._executed = cmd
        i = bisect.bisect_left(self._states, stamp) - 1
        if i < 0:
            return None
        frame = self._states[i]
        known = self._tags.get(tag) if tag else None
        if known is not None:
            src, plan = known
            self.echoed_steps += 1
        else:
            src, plan = self.source_at(stamp), None
            self.timed_steps += 1
        human = src == Source.HUMAN
        if human:
            self.counts.intervention_steps += 1
        if plan is None:
            plan = self._plan_at(stamp)
        proposal = plan.sample(stamp) if plan is not None else np.full(self.dim, np.nan)
        return StepRecord(frame, human, proposal, src, self.counts.interventions)

    def _plan_at(self, t: float) -> Plan | None:
        """The newest policy chunk received by ``t`` (None: none yet)."""
        i = bisect.bisect_right([a for a, _ in self._plans], t) - 1
        return self._plans[i][1] if i >= 0 else None

    # -- reporting -------------------------------------------------------------------------
    def status(self, now: float) -> dict[str, object]:
        c = self.counts
        open_s = now - self._since if self.source == Source.HUMAN else 0.0
        return {
            "source": self.source.name.lower(),
            "intervening": self.source == Source.HUMAN,
            "episode_interventions": c.interventions,
            "episode_intervention_steps": c.intervention_steps,
            "episode_intervention_s": round(c.intervention_s + open_s, 3),
            "episode_handbacks": c.handbacks,
            "episode_holds": c.holds,
            "forwarded_chunks": self.forwarded_chunks,
            "shadow_chunks": self.shadow_chunks,
            "rate_limited_chunks": self.limited_chunks,
            "stale_chunks": self.stale_chunks,
            "steps_by_echo": self.echoed_steps,
            "steps_by_timing": self.timed_steps,
            "error": self.error,
        }
