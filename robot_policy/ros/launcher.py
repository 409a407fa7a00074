"""Run a parsed launch description: one process per node, prefixed logs, clean shutdown.

What ``ros2 launch`` does for our files, for machines without it (pip installs, CI):

* each node starts as its console script with ``--ros-args`` (name, namespace, params, remaps);
* every output line is prefixed with ``[node_name]``;
* Ctrl-C / SIGTERM, or the exit of a node with ``on_exit="shutdown"``, stops all nodes: SIGINT,
  then SIGTERM, then SIGKILL to each node's process group after a grace period;
* each child gets ``PR_SET_PDEATHSIG`` so it dies with the launcher even if the launcher is
  killed with SIGKILL: no orphans.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from robot_policy.ros.launch_file import LaunchDescription, LaunchError, NodeSpec
from robot_policy.ros.transport import apply_profile

_COLORS = ["\033[36m", "\033[33m", "\033[35m", "\033[32m", "\033[34m", "\033[31m"]


def _set_pdeathsig() -> None:
    # Runs in the child between fork and exec: die with SIGTERM when the launcher dies.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass
    # Nodes start with normal scheduling even when the launching thread was raised to a
    # realtime class (libfranka does that to its caller): a busy node inheriting SCHED_FIFO 99
    # starves the whole machine. A backend that wants realtime priority sets it on its own thread.
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        pass
    # The launcher stops nodes with SIGINT first; a launch started in the background of a
    # non-interactive shell would hand its nodes SIGINT ignored (and then wait out the grace).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def resolve_executable(spec: NodeSpec) -> list[str]:
    """Command for ``pkg``/``exec``: ``<prefix>/lib/<pkg>/<exec>`` (ament layout), else a console
    script next to this Python (``.venv/bin``) or on PATH."""
    candidates = []
    for prefix in [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]:
        candidates.append(Path(prefix) / "lib" / spec.pkg / spec.executable)
    candidates.append(Path(sys.executable).parent / spec.executable)
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return [str(c)]
    found = shutil.which(spec.executable)
    if found:
        return [found]
    raise LaunchError(
        f"node '{spec.name}': executable '{spec.executable}' of package '{spec.pkg}' not found; "
        f"is the package installed (pip install robot_policy, or colcon build for ros2 launch) with its "
        f"console scripts on PATH?"
    )


@dataclass
class _Proc:
    spec: NodeSpec
    popen: subprocess.Popen
    thread: threading.Thread


class Launcher:
    """Starts the nodes of a :class:`LaunchDescription` and supervises them."""

    def __init__(self, desc: LaunchDescription, grace: float = 5.0, color: bool | None = None, out=None):
        self.desc = desc
        self.grace = grace
        self.out = out or sys.stdout
        self.color = self.out.isatty() if color is None else color
        self.procs: list[_Proc] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.failed: list[tuple[str, int]] = []
        """(node name, exit code) of nodes that exited with a non-zero code."""
        self.reason = ""
        self._stopping = False

    def _print(self, text: str) -> None:
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()

    def _pump(self, proc: subprocess.Popen, prefix: str) -> None:
        for line in iter(proc.stdout.readline, b""):
            self._print(prefix + line.decode(errors="replace").rstrip("\n"))

    def start(self) -> None:
        env = dict(os.environ)
        env.update(self.desc.env)
        apply_profile(env)  # a set_env in the file already set it; this covers files without one
        env.setdefault("PYTHONUNBUFFERED", "1")
        for i, spec in enumerate(self.desc.nodes):
            cmd = resolve_executable(spec) + spec.args + spec.ros_args()
            penv = dict(env)
            penv.update(spec.env)
            popen = subprocess.Popen(
                cmd,
                env=penv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: Ctrl-C reaches it only through us
                preexec_fn=_set_pdeathsig,
            )
            color = _COLORS[i % len(_COLORS)] if self.color else ""
            prefix = f"{color}[{spec.name}]{chr(27) + '[0m' if color else ''} "
            th = threading.Thread(target=self._pump, args=(popen, prefix), daemon=True)
            th.start()
            self.procs.append(_Proc(spec, popen, th))
            self._print(f"[launch] started {spec.name} (pid {popen.pid}): {' '.join(cmd)}")

    def poll(self) -> bool:
        """Check the children once; returns False when the launch should shut down."""
        alive = 0
        for p in self.procs:
            rc = p.popen.poll()
            if rc is None:
                alive += 1
                continue
            if getattr(p, "_reported", False):
                continue
            p._reported = True  # type: ignore[attr-defined]
            if rc != 0 and not (self._stopping and rc in (0, -2, -15, -9, 130, 143)):
                self.failed.append((p.spec.name, rc))
                self._print(f"[launch] ERROR: node '{p.spec.name}' died with exit code {rc}")
            elif not self._stopping:
                self._print(f"[launch] node '{p.spec.name}' exited cleanly")
            if p.spec.required and not self._stopping:
                self.reason = f"required node '{p.spec.name}' exited (code {rc})"
                self._print(f"[launch] {self.reason}: shutting down")
                return False
        return alive > 0 and not self._stop.is_set()

    def request_stop(self, reason: str = "stop requested") -> None:
        self.reason = self.reason or reason
        self._stop.set()

    def shutdown(self) -> None:
        """SIGINT every node, then SIGTERM, then SIGKILL their process groups."""
        self._stopping = True  # exit codes of our own signals are not failures
        for sig, wait in ((signal.SIGINT, self.grace), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
            live = [p for p in self.procs if p.popen.poll() is None]
            if not live:
                break
            for p in live:
                try:
                    os.killpg(p.popen.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(p.popen.poll() is None for p in live):
                time.sleep(0.05)
            if sig != signal.SIGKILL and any(p.popen.poll() is None for p in live):
                names = [p.spec.name for p in live if p.popen.poll() is None]
                self._print(f"[launch] {names} still running after {signal.Signals(sig).name}: escalating")
        for p in self.procs:
            # Grandchildren (e.g. worker processes) share the node's process group.
            try:
                os.killpg(p.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.thread.join(timeout=1.0)
        self.poll()

    def run(self) -> int:
        """Start, supervise until Ctrl-C / SIGTERM / a required node exits, shut down.

        Returns 0 for a clean run, 1 when a node failed.
        """
        old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(
                    sig, lambda s, f: self.request_stop(f"received {signal.Signals(s).name}")
                )
        try:
            self.start()
            while self.poll():
                time.sleep(0.1)
            self._print(f"[launch] shutting down ({self.reason or 'all nodes exited'})")
            self.shutdown()
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
        if self.failed:
            self._print("[launch] failed nodes: " + ", ".join(f"{n} (exit code {c})" for n, c in self.failed))
            return 1
        return 0
