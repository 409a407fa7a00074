"""The simulated human of HIL-SERL / RLIF runs: the task's scripted expert, intervening on a
documented progress rule.

**Rule** (checked once per control step, on the state the policy is about to act in):

* **take over** when either
  - *stalled*: the task progress (env ``progress()``: minus the fingertip-to-cube distance plus
    3x the cube's lift, in metres) has not beaten its best value since the last handback by at
    least ``min_gain`` for ``patience`` consecutive steps, or
  - *knocked*: the cube was pushed more than ``knock_m`` across the table (not lifted) since the
    last handback;
* **hand back** after the expert has driven ``hold_steps`` steps; progress bookkeeping restarts
  from there (the policy gets a fresh ``patience`` window).

As under the arbiter (:mod:`robot_policy.teleop.arbiter`, the path :mod:`robot_policy.hil.dagger`
runs in simulation): the human's command replaces the policy's at once and passes the same
safety layer; the policy's own proposal is still computed and recorded (``policy_action``); at a
takeover the expert is re-synchronised with where the arm is (``expert_takeover``), at a
handback the policy resumes from the state the human left. Every step records whether the
human drove (``intervened``) and whether a takeover began there (``intervention_start``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class HumanConfig:
    """Simulated human (``robot-policy hil run`` flags ``--human-*``)."""

    patience: int = 10
    """Steps without new progress before taking over (10 = 0.5 s at the tabletop's 20 Hz)."""
    min_gain: float = 0.005
    """Metres by which progress must beat its best to count as progress."""
    knock_m: float = 0.03
    """Cube pushed this far across the table (since the last handback): take over at once."""
    hold_steps: int = 25
    """Steps the expert drives once it took over (the whole task takes it ~75)."""
    enabled: bool = True
    """False: never intervene (a run without a human)."""

    def __post_init__(self) -> None:
        if self.patience < 1 or self.hold_steps < 1:
            raise ValueError(
                f"human patience and hold_steps must be >= 1, got {self.patience}, {self.hold_steps}"
            )


class SimulatedHuman:
    """Decides per step whether the expert drives (see the module docstring for the rule)."""

    def __init__(self, cfg: HumanConfig):
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        self.intervening = False
        self.best = -np.inf
        self.stalled = 0
        self.held = 0
        self.knock_ref = 0.0
        self.interventions = 0
        self.reason = ""

    def update(self, env) -> tuple[bool, bool]:
        """Call before acting in the current state; returns ``(intervening, started_now)``."""
        c = self.cfg
        if not c.enabled:
            return False, False
        if self.intervening:
            self.held += 1
            if self.held > c.hold_steps:
                self.intervening = False
                env.expert_release()
                self.best, self.stalled = env.progress(), 0
                self.knock_ref = env.knocked()
            else:
                return True, False
        p = env.progress()
        if p >= self.best + c.min_gain:
            self.best, self.stalled = p, 0
        else:
            self.stalled += 1
        knocked = env.knocked() - self.knock_ref > c.knock_m
        if self.stalled >= c.patience or knocked:
            self.reason = "knocked" if knocked else "stalled"
            self.intervening, self.held = True, 1
            self.interventions += 1
            env.expert_takeover()
            return True, True
        return False, False
