"""Stage timestamps of every action chunk, from the camera to the arm, with a budget per stage.

One :class:`ChunkTrace` per published chunk holds the graph-clock time (seconds) of each point
on its path (``STAMPS``, in order):

- ``capture``: sensor stamp of the observation the chunk answers (the newest common capture);
- ``arrival``: when the last sample of that observation reached the policy node;
- ``chosen``: when the policy node assembled the observation and decided to infer;
- ``infer_start`` / ``infer_end``: the predictor call, in the inference worker;
- ``ready``: when the control loop picked the finished chunk up;
- ``publish``: when the JointTrajectory was handed to ``publish()`` (the call is transport);
- ``robot_arrival``: when the robot node received it;
- ``first_exec``: the control tick that first sent one of its actions to the arm.

The differences between consecutive points are the stages (``STAGES``); a stage whose p99 over
the recent traces exceeds its budget is named in the policy node's WARN status. The robot's two
points come back from the robot node on ``/robot/chunk_trace`` (matched by the trajectory's
header stamp, which is the capture time). ``TraceLog.save`` writes JSON lines that ``load``
reads back and ``plot_stages`` draws.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

STAMPS = (
    "capture",
    "arrival",
    "chosen",
    "infer_start",
    "infer_end",
    "ready",
    "publish",
    "robot_arrival",
    "first_exec",
)
ROBOT_STAMPS = ("robot_arrival", "first_exec")
STAGES = OrderedDict(
    [
        ("transport_in", ("capture", "arrival")),
        ("settle", ("arrival", "chosen")),
        ("queue", ("chosen", "infer_start")),
        ("inference", ("infer_start", "infer_end")),
        ("pickup", ("infer_end", "ready")),
        ("publish", ("ready", "publish")),
        ("transport_out", ("publish", "robot_arrival")),
        ("execute", ("robot_arrival", "first_exec")),
    ]
)
"""Stage name -> (from stamp, to stamp)."""


@dataclass
class ChunkTrace:
    """Graph-clock seconds of one chunk's path; NaN where a point is not known (yet)."""

    capture: float = math.nan
    arrival: float = math.nan
    chosen: float = math.nan
    infer_start: float = math.nan
    infer_end: float = math.nan
    ready: float = math.nan
    publish: float = math.nan
    robot_arrival: float = math.nan
    first_exec: float = math.nan

    def stages_ms(self) -> dict[str, float]:
        """Stage durations in milliseconds (NaN where either end is missing)."""
        return {name: (getattr(self, b) - getattr(self, a)) * 1e3 for name, (a, b) in STAGES.items()}

    def complete(self) -> bool:
        return all(math.isfinite(getattr(self, s)) for s in STAMPS)

    def monotone(self) -> bool:
        """Each known point at or after the one before (a chunk cannot run before it exists)."""
        known = [getattr(self, s) for s in STAMPS if math.isfinite(getattr(self, s))]
        return all(b >= a for a, b in zip(known, known[1:]))


@dataclass
class StageBudget:
    """Per-stage budget in milliseconds; 0 = derived from the control period ``dt``.

    The defaults leave a control period for what waits on purpose (settling on the next capture,
    the robot's next tick) and fractions of it for what should take no time at all.
    """

    transport_in: float = 0.0
    """Capture -> arrival in the policy node (DDS delivery; default 0.5 dt)."""
    settle: float = 0.0
    """Arrival -> observation chosen (waiting for the other streams of the same instant; default 1 dt)."""
    queue: float = 0.0
    """Observation chosen -> inference running (thread start, GIL; default 0.2 dt)."""
    inference: float = 0.0
    """The predictor call (default 1 dt: a chunk must be ready before the next one is due)."""
    pickup: float = 0.0
    """Inference done -> picked up by the control loop (default 0.2 dt)."""
    publish: float = 0.0
    """Picked up -> JointTrajectory published (conversion; default 0.2 dt)."""
    transport_out: float = 0.0
    """Published -> arrival in the robot node (default 0.5 dt)."""
    execute: float = 0.0
    """Arrival in the robot node -> its first action sent to the arm (the robot's next tick; default 1 dt)."""

    def resolved(self, dt: float) -> dict[str, float]:
        """Budget in ms per stage, zeros replaced by the defaults for control period ``dt`` (s)."""
        share = {"settle": 1.0, "inference": 1.0, "execute": 1.0, "transport_in": 0.5, "transport_out": 0.5}
        return {f.name: getattr(self, f.name) or share.get(f.name, 0.2) * dt * 1e3 for f in fields(self)}


@dataclass
class TraceLog:
    """Recent traces: per-stage percentiles, the budget check, and a JSON-lines file."""

    dt: float
    budget: StageBudget = field(default_factory=StageBudget)
    window: int = 500
    path: Path | None = None
    """Append every finished trace here (JSON lines); None: keep them in memory only."""

    def __post_init__(self):
        self.finished: deque[ChunkTrace] = deque(maxlen=self.window)
        self._pending: OrderedDict[float, ChunkTrace] = OrderedDict()
        self.incomplete = 0
        """Chunks the robot never reported (superseded before its next tick, or not executed)."""
        self.total = 0
        """Traces finished since start (``finished`` keeps the last ``window``)."""
        self.nonmonotone = 0
        self.last_nonmonotone = ""
        """The negative stages of the last such trace."""
        """Traces with a point before the one it follows: on one machine a bug; across machines,
        clocks that are not synchronized (chrony/PTP), which also skews every latency figure."""
        self._file = None
        if self.path is not None:
            self.path = Path(self.path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", buffering=1)  # line-buffered: a crash loses one line

    def published(self, trace: ChunkTrace, wait_for_robot: bool = True) -> None:
        """A chunk went out; it is finished when the robot reports it (or right away)."""
        if not wait_for_robot:
            self._finish(trace)
            return
        self._pending[round(trace.capture, 6)] = trace
        while len(self._pending) > 64:  # the robot never answered the oldest: count and keep it
            _, old = self._pending.popitem(last=False)
            self.incomplete += 1
            self._finish(old)

    def robot_report(self, capture: float, robot_arrival: float, first_exec: float) -> bool:
        """The robot's points for the chunk answering ``capture``; False when unknown."""
        trace = self._pending.pop(round(capture, 6), None)
        if trace is None:
            return False
        trace.robot_arrival, trace.first_exec = robot_arrival, first_exec
        if not math.isfinite(first_exec):
            self.incomplete += 1
        self._finish(trace)
        return True

    def _finish(self, trace: ChunkTrace) -> None:
        self.total += 1
        if not trace.monotone():
            self.nonmonotone += 1
            back = [f"{k} {v:.1f} ms" for k, v in trace.stages_ms().items() if v < 0]
            self.last_nonmonotone = ", ".join(back)
        self.finished.append(trace)
        if self._file is not None:
            self._file.write(json.dumps(asdict(trace)) + "\n")

    def percentiles(self, qs=(50, 99)) -> dict[str, dict[int, float]]:
        """Stage -> {q: ms} over the finished traces (stages never measured are left out)."""
        out: dict[str, dict[int, float]] = {}
        per = [t.stages_ms() for t in self.finished]
        for name in STAGES:
            vals = np.array([p[name] for p in per], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            if vals.size:
                out[name] = {q: float(np.percentile(vals, q)) for q in qs}
        return out

    def over_budget(self, q: int = 99) -> dict[str, tuple[float, float]]:
        """Stages whose ``q`` percentile exceeds the budget: name -> (measured ms, budget ms)."""
        budget = self.budget.resolved(self.dt)
        return {
            name: (p[q], budget[name]) for name, p in self.percentiles((q,)).items() if p[q] > budget[name]
        }

    def diagnostics(self) -> dict[str, str]:
        out = {
            "traced_chunks": str(self.total),
            "untraced_chunks": str(self.incomplete),
            "pending_chunks": str(len(self._pending)),
            "nonmonotone_chunks": str(self.nonmonotone),
            "last_nonmonotone": self.last_nonmonotone,
        }
        budget = self.budget.resolved(self.dt)
        for name, p in self.percentiles().items():
            out[f"stage_ms/{name}_p50"] = f"{p[50]:.1f}"
            out[f"stage_ms/{name}_p99"] = f"{p[99]:.1f}"
            out[f"stage_ms/{name}_budget"] = f"{budget[name]:.1f}"
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def load(path: str | Path) -> list[ChunkTrace]:
    """Read a trace file written by :class:`TraceLog` (JSON lines; NaN as written by json)."""
    names = {f.name for f in fields(ChunkTrace)}
    out = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        unknown = set(row) - names
        if unknown:
            raise ValueError(f"{path}:{i}: not a chunk trace (unknown keys {sorted(unknown)})")
        out.append(ChunkTrace(**{k: float(v) for k, v in row.items()}))
    return out


def stage_table(traces: list[ChunkTrace], budget: dict[str, float] | None = None) -> list[dict]:
    """Rows ``stage, n, p50_ms, p90_ms, p99_ms[, budget_ms]`` plus ``total`` (capture -> first exec)."""
    rows = []
    per = [t.stages_ms() for t in traces]
    cols = {name: [p[name] for p in per] for name in STAGES}
    cols["total"] = [(t.first_exec - t.capture) * 1e3 for t in traces]
    cols["obs_to_publish"] = [(t.publish - t.capture) * 1e3 for t in traces]
    for name, vals in cols.items():
        v = np.asarray(vals, dtype=np.float64)
        v = v[np.isfinite(v)]
        if not v.size:
            continue
        row = {"stage": name, "n": int(v.size)}
        row.update({f"p{q}_ms": round(float(np.percentile(v, q)), 2) for q in (50, 90, 99)})
        if budget and name in budget:
            row["budget_ms"] = round(budget[name], 1)
        rows.append(row)
    return rows


def plot_stages(traces: list[ChunkTrace], out: str | Path, title: str = "") -> Path:
    """Two panels: per-chunk stacked stages over time, and each stage's distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = np.array([[t.stages_ms()[s] for s in STAGES] for t in traces], dtype=np.float64)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    bottom = np.zeros(len(traces))
    x = np.arange(len(traces))
    for j, name in enumerate(STAGES):
        v = np.nan_to_num(per[:, j], nan=0.0)
        ax1.bar(x, v, bottom=bottom, width=1.0, label=name)
        bottom += v
    ax1.set_xlabel("chunk")
    ax1.set_ylabel("ms (stacked: capture -> first action executed)")
    ax1.legend(fontsize=7, ncol=4)
    data = [per[np.isfinite(per[:, j]), j] for j in range(len(STAGES))]
    ax2.boxplot([d if d.size else [np.nan] for d in data], vert=False, whis=(1, 99), showfliers=True)
    ax2.set_yticks(range(1, len(STAGES) + 1), list(STAGES))
    ax2.set_xscale("symlog", linthresh=1.0)
    ax2.set_xlabel("ms (whiskers p1-p99)")
    fig.suptitle(title or f"chunk latency by stage ({len(traces)} chunks)")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
