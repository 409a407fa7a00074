"""Run franky-sim (a libfranka-protocol server on MuJoCo) as a subprocess: a real Franka stand-in.

``FrankySimServer("127.0.0.2").start()`` serves an FR3 with a Franka Hand on that loopback
address; ``franky.Robot("127.0.0.2")`` then talks to it exactly as to a robot. Used by the
``franka`` backend when ``arm_config.start_sim`` is true and by the tests (which also kill and
restart it to exercise fault recovery). Addresses must be in 127.0.0.0/8: the server binds
the fixed libfranka ports (1337 robot, 1338 gripper) on that address.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from robot_policy.robots.base import ArmError, import_sdk

log = logging.getLogger("robot_policy.robots.franka.sim")

READY_LINE = "Connect to the server"
"""What franky_sim.run_server prints once it accepts connections."""
ROBOT_PORT = 1337
"""libfranka's robot command port, bound by the server on its address."""


def free_loopback_address(rng: random.Random | None = None, tries: int = 50) -> str:
    """A random 127.x.y.z on which the libfranka ports are free (for tests running in parallel)."""
    rng = rng or random.Random()
    for _ in range(tries):
        host = f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(2, 254)}"
        if port_free(host):
            return host
    raise RuntimeError(f"no free loopback address after {tries} tries")


def port_free(host: str, port: int = ROBOT_PORT) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the thread that started it exits, so a crashed
    test or controller never leaves a 1 kHz simulation running (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except Exception:  # noqa: BLE001 - not Linux: the server is stopped by stop() only
        pass


class FrankySimServer:
    """One franky-sim server process (MuJoCo backend, no viewer) bound to ``hostname``."""

    def __init__(self, hostname: str, start_timeout_s: float = 60.0, log_path: str | Path | None = None):
        if not ipaddress.ip_address(hostname).is_loopback:
            raise ValueError(
                f"franky-sim hostname must be a loopback address (127.0.0.0/8), got {hostname!r}"
            )
        self.hostname = hostname
        self.start_timeout_s = float(start_timeout_s)
        self.log_path = (
            Path(log_path) if log_path else Path(tempfile.gettempdir()) / f"franky_sim_{hostname}.log"
        )
        self.proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> FrankySimServer:
        """Start the server and wait until it accepts connections (raises ArmError with its log)."""
        if self.running:
            return self
        import_sdk("franky_sim", backend="franka", package="franky-sim", extra="franka")
        if not port_free(self.hostname):
            raise ArmError(f"franky-sim: {self.hostname}:{ROBOT_PORT} is in use (another server or robot?)")
        with open(self.log_path, "w") as logf:
            # Own process group: a test can kill the server without touching the test process.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "franky_sim.run_server", "-s", "mujoco", "--hostname", self.hostname],
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if READY_LINE in self._log_text():
                log.info("franky-sim serving on %s (pid %d)", self.hostname, self.proc.pid)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = self._log_text()[-2000:]
        self.stop()
        raise ArmError(
            f"franky-sim did not come up on {self.hostname} within {self.start_timeout_s} s:\n{tail}"
        )

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL), like a crash or a pulled cable."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def _log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> FrankySimServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
