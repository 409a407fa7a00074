"""The operator of an evaluation session: labels, preferences, and the labellers that give them.

A ``Labeller`` sees only the hidden label of the policy that ran (``A``/``B``, or ``X``), never
its name. Per episode it gives an :class:`EpisodeLabel` (success / failure, a partial score
0-100, a note, or *abort*: the episode is re-run from the same reset and not counted); per A/B
trial a :class:`Preference` (``A`` / ``B`` / ``tie``). Two optional hooks let a person drive the
episode itself: ``ready(trial, label, seed)`` blocks until the scene is reset and the operator
starts the episode; ``end_requested()`` (polled while the policy runs) ends it early.

Labellers here (ROS-free):

* :class:`ScriptedOperator` — labels from the simulator's oracle (``/sim/success`` through the
  graph, ``info["success"]`` in process): the whole protocol runs unattended in simulation.
* :class:`TerminalOperator` — a person typing at the terminal.
* :class:`DeviceOperator` — a person pressing the episode keys/buttons of a teleop device
  (keyboard, gamepad: ``robot_policy.teleop``): start, end, success, failure, abort, A/B/tie.

The ROS service labeller (an operator's UI calls ``/evaluate/*`` services) is
``robot_policy.ros.evaluate.ServiceOperator``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

PREFERENCES = ("A", "B", "tie")


class SessionError(ValueError):
    """A session file, config or label that cannot be used (names the field and the value)."""


@dataclass
class EpisodeLabel:
    """The operator's verdict on one episode. ``aborted``: re-run it, do not count it."""

    success: bool = False
    partial: float = 0.0
    note: str = ""
    aborted: bool = False

    def __post_init__(self):
        if not 0.0 <= float(self.partial) <= 100.0:
            raise SessionError(f"partial={self.partial}: a partial score lies in [0, 100]")


@dataclass
class Preference:
    """The operator's A/B verdict on one trial: ``choice`` in ``A``, ``B``, ``tie``."""

    choice: str
    note: str = ""

    def __post_init__(self):
        if self.choice not in PREFERENCES:
            raise SessionError(f"preference={self.choice!r}: expected one of {PREFERENCES}")


class Labeller(Protocol):
    """The operator: sees the hidden label only, never the policy name."""

    def label(self, trial: int, label: str, seed: int, result: Mapping) -> EpisodeLabel: ...

    def prefer(
        self, trial: int, labels: Mapping[str, EpisodeLabel], results: Mapping[str, Mapping]
    ) -> Preference: ...


class ScriptedOperator:
    """Labels from the simulator's oracle: success -> 100, failure -> 0 (or ``result['progress']``
    x 100 when the runner reports progress). Prefers the higher score; between two successes, the
    faster episode; otherwise a tie. ``abort`` lists ``(trial, label)`` whose first attempt it
    aborts (to exercise re-runs)."""

    def __init__(self, abort: set[tuple[int, str]] | None = None):
        self.abort = set(abort or ())

    def label(self, trial, label, seed, result) -> EpisodeLabel:
        if (trial, label) in self.abort:
            self.abort.discard((trial, label))
            return EpisodeLabel(aborted=True, note="scripted abort")
        if result.get("success") is None:
            raise SessionError(
                "the scripted operator labels from the simulator's success oracle, and this robot has "
                "none (a real robot): label with --operator terminal, keyboard, gamepad or service"
            )
        ok = bool(result.get("success"))
        partial = 100.0 if ok else float(np.clip(result.get("progress", 0.0), 0.0, 1.0)) * 100.0
        return EpisodeLabel(success=ok, partial=partial, note="" if ok else "oracle: not done")

    def prefer(self, trial, labels, results) -> Preference:
        a, b = labels["A"], labels["B"]
        if a.partial != b.partial:
            return Preference("A" if a.partial > b.partial else "B")
        if a.success and b.success and results["A"]["steps"] != results["B"]["steps"]:
            return Preference("A" if results["A"]["steps"] < results["B"]["steps"] else "B", note="faster")
        return Preference("tie")


class TerminalOperator:
    """A person at the terminal: ``s``uccess / ``f``ailure / ``a``bort, a partial score, a note."""

    def __init__(self, ask: Callable[[str], str] = input, say: Callable[[str], None] = print):
        self.ask, self.say = ask, say

    def _choice(self, prompt: str, options: dict[str, Any]) -> Any:
        while True:
            ans = self.ask(prompt).strip().lower()
            if ans in options:
                return options[ans]
            self.say(f"  please answer one of: {', '.join(options)}")

    def ready(self, trial, label, seed) -> None:
        self.ask(f"trial {trial}, policy {label}: reset the scene (seed {seed}), then press Enter to start ")

    def label(self, trial, label, seed, result) -> EpisodeLabel:
        self.say(f"trial {trial}, policy {label} (seed {seed}) finished after {result.get('steps')} steps")
        verdict = self._choice("  outcome [s]uccess/[f]ailure/[a]bort: ", {"s": "s", "f": "f", "a": "a"})
        if verdict == "a":
            return EpisodeLabel(aborted=True, note=self.ask("  why aborted (note): ").strip())
        default = 100.0 if verdict == "s" else 0.0
        while True:
            raw = self.ask(f"  partial score 0-100 [{default:g}]: ").strip()
            try:
                partial = float(raw) if raw else default
                if 0.0 <= partial <= 100.0:
                    break
            except ValueError:
                pass
            self.say("  a number from 0 to 100, please")
        return EpisodeLabel(success=verdict == "s", partial=partial, note=self.ask("  note: ").strip())

    def prefer(self, trial, labels, results) -> Preference:
        choice = self._choice("  which was better? [a]/[b]/[t]ie: ", {"a": "A", "b": "B", "t": "tie"})
        return Preference(choice, note=self.ask("  note: ").strip())


class DeviceOperator:
    """A person with a teleop device (keyboard, gamepad): its episode buttons label the session.

    * START (keyboard ``n``, gamepad Start): the scene is reset, run the episode;
    * while it runs: SUCCESS / FAILURE (``m`` / ``l``, Y / A) end it with that label, DISCARD
      (``b``, X) aborts it (re-run, not counted), STOP (``k``, Back) ends it, to be labelled next;
    * after an episode: SUCCESS, FAILURE or DISCARD;
    * after both episodes of a trial: SUCCESS = A was better, FAILURE = B was better, STOP = tie.

    A device gives no partial score: success is 100, failure 0. ESTOP / ESTOP_RESET call
    ``estop(latched: bool)`` when given (the robot's ``/estop``). ``device`` must be connected.
    """

    def __init__(
        self,
        device,
        say: Callable[[str], None] = print,
        poll_s: float = 0.02,
        estop: Callable[[bool], None] | None = None,
    ):
        self.device = device
        self.say = say
        self.poll_s = poll_s
        self.estop = estop
        self._pending: EpisodeLabel | None = None
        self._queue: list = []  # events read with an earlier one, not handled yet

    def _key(self, event) -> str:
        """How the operator gives ``event`` on this device (for prompts)."""
        buttons = getattr(self.device.config, "buttons", None)
        if isinstance(buttons, dict) and event.value in buttons:
            return f"button {buttons[event.value]}"
        try:
            from robot_policy.teleop.keyboard.device import EVENT_KEYS

            if self.device.name == "keyboard":
                return "key " + next(k for k, v in EVENT_KEYS.items() if v == event)
        except StopIteration:
            pass
        return event.value

    def _events(self) -> list:
        from robot_policy.teleop.base import TeleopEvent

        out, self._queue = self._queue, []
        for ev in self.device.read(None).events:
            if ev in (TeleopEvent.ESTOP, TeleopEvent.ESTOP_RESET):
                if self.estop is not None:
                    self.estop(ev == TeleopEvent.ESTOP)
                self.say(f"  {'e-stop latched' if ev == TeleopEvent.ESTOP else 'e-stop released'}")
                continue
            out.append(ev)
        return out

    def _wait(self, wanted: set) -> Any:
        while True:
            events = self._events()
            for i, ev in enumerate(events):
                if ev in wanted:
                    self._queue = events[i + 1 :] + self._queue
                    return ev
            time.sleep(self.poll_s)

    def ready(self, trial, label, seed) -> None:
        from robot_policy.teleop.base import TeleopEvent as E

        self._pending = None
        self.say(
            f"trial {trial}, policy {label}: reset the scene (seed {seed}), then press "
            f"{self._key(E.START)} to start"
        )
        self._wait({E.START})

    def end_requested(self) -> bool:
        from robot_policy.teleop.base import TeleopEvent as E

        events = self._events()
        for i, ev in enumerate(events):
            if ev == E.SUCCESS:
                self._pending = EpisodeLabel(success=True, partial=100.0)
            elif ev == E.FAILURE:
                self._pending = EpisodeLabel(success=False, partial=0.0)
            elif ev == E.DISCARD:
                self._pending = EpisodeLabel(aborted=True, note="aborted from the device")
            if ev in (E.SUCCESS, E.FAILURE, E.DISCARD, E.STOP):
                self._queue = events[i + 1 :] + self._queue
                return True
        return False

    def label(self, trial, label, seed, result) -> EpisodeLabel:
        from robot_policy.teleop.base import TeleopEvent as E

        if self._pending is not None:
            out, self._pending = self._pending, None
            return out
        self.say(
            f"trial {trial}, policy {label}: success {self._key(E.SUCCESS)}, failure "
            f"{self._key(E.FAILURE)}, abort {self._key(E.DISCARD)}"
        )
        ev = self._wait({E.SUCCESS, E.FAILURE, E.DISCARD})
        if ev == E.DISCARD:
            return EpisodeLabel(aborted=True, note="aborted from the device")
        return EpisodeLabel(success=ev == E.SUCCESS, partial=100.0 if ev == E.SUCCESS else 0.0)

    def prefer(self, trial, labels, results) -> Preference:
        from robot_policy.teleop.base import TeleopEvent as E

        self.say(
            f"trial {trial}: which was better? A: {self._key(E.SUCCESS)}, B: {self._key(E.FAILURE)}, "
            f"tie: {self._key(E.STOP)}"
        )
        ev = self._wait({E.SUCCESS, E.FAILURE, E.STOP})
        return Preference({E.SUCCESS: "A", E.FAILURE: "B", E.STOP: "tie"}[ev])
