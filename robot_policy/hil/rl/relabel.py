"""The human checks the reward classifier's successes, and its mistakes retrain it (HIL-SERL).

Under RL a success classifier is an adversary's target: the policy learns to reach states it
calls success without the task being done (on the tabletop, 143 of 302 training episodes ended
on a false success although the held-out false-positive rate was 0.1%). HIL-SERL's operator
watches the robot anyway; when the classifier declares success and the task is not done, they
say so. :class:`VerifiedClassifier` plays that part:

- a success the human rejects gives reward 0 and does not end the episode;
- the rejected frame becomes a labelled negative (the human's word, the simulator's flag here);
- every ``relabel_every`` new rejections the classifier is retrained from scratch on its
  labelled frames plus all rejected ones, which make up ``hard_negative_share`` of every batch's
  negatives (a few dozen corrections would otherwise vanish among thousands of frames), and the
  threshold is chosen again on validation episodes that include rejected frames.

Every rejection is one label from the human; the run reports how many it took.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from robot_policy.hil.rl.reward import RewardConfig, SuccessClassifier, train_classifier


class VerifiedClassifier:
    """A success classifier whose positives a human confirms before they count."""

    def __init__(
        self,
        classifier: SuccessClassifier,
        frames: dict[str, np.ndarray] | None,
        relabel_every: int = 10,
        hard_negative_share: float = 0.25,
        log=print,
    ):
        if relabel_every < 1:
            raise ValueError(f"relabel_every must be >= 1 rejection, got {relabel_every}")
        if not 0.0 < hard_negative_share < 1.0:
            raise ValueError(f"hard_negative_share must be in (0, 1), got {hard_negative_share}")
        self.classifier = classifier
        self.frames = frames
        self.relabel_every = int(relabel_every)
        self.hard_negative_share = float(hard_negative_share)
        self.log = log
        self.rejected: list[dict[str, np.ndarray]] = []
        self.confirmed = 0
        self.retrains: list[dict] = []
        self._used = 0  # rejections already in the classifier's training data
        if frames is None:
            log(
                "success verification: the classifier's labelled frames were not found, so rejected "
                "successes are not learned from (train it with `hil reward train`, which saves frames.safetensors)"
            )

    def __call__(self, next_obs: dict[str, np.ndarray], success: bool) -> tuple[float, bool]:
        """(reward, episode done) for one transition, as the experiment's reward functions. The
        human judges only what the classifier declares (the episode ending in front of them);
        a success it misses is not rewarded and the episode goes on, as on the robot."""
        if self.classifier.reward(next_obs) <= 0:
            return 0.0, False
        if success:
            self.confirmed += 1
            return 1.0, True
        self.rejected.append(self._frame(next_obs))
        if self.frames is not None and len(self.rejected) - self._used >= self.relabel_every:
            self.retrain()
        return 0.0, False

    def _frame(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The observation in the labelled frames' layout (every key they have, whatever the
        classifier reads: an image classifier's frames also carry the state)."""
        keys = (
            [k for k in self.frames if k not in ("label", "episode", "hard")]
            if self.frames is not None
            else []
        )
        if not keys:
            keys = (["state"] if self.classifier.use_state else []) + [
                f"image/{c}" for c in self.classifier.cameras
            ]
        return {
            k: np.asarray(obs["state"] if k == "state" else obs[f"{k.split('/', 1)[1]}_rgb"]) for k in keys
        }

    def training_frames(self) -> dict[str, np.ndarray]:
        """The labelled frames plus every rejected one as a negative, marked ``hard`` (drawn as
        ``hard_share`` of each batch's negatives); each rejection is its own episode, so the
        split spreads them over train, validation (the threshold) and test (the report)."""
        base = self.frames
        assert base is not None
        n = len(self.rejected)
        first = int(base["episode"].max()) + 1
        out = {}
        for k, v in base.items():
            if k == "label":
                extra = np.zeros(n, v.dtype)
            elif k == "episode":
                extra = np.arange(first, first + n, dtype=v.dtype)
            elif k == "hard":
                continue
            else:
                extra = np.stack([np.asarray(r[k], v.dtype) for r in self.rejected])
            out[k] = np.concatenate([v, extra])
        out["hard"] = np.concatenate([np.zeros(len(base["label"]), bool), np.ones(n, bool)])
        return out

    def retrain(self) -> None:
        cfg: RewardConfig = dataclasses.replace(
            self.classifier.cfg, seed=self.classifier.cfg.seed + len(self.retrains) + 1
        )
        clf, report = train_classifier(self.training_frames(), cfg, hard_share=self.hard_negative_share)
        self._used = len(self.rejected)
        self.classifier = clf
        entry = {
            "rejections": self._used,
            "threshold": report.threshold,
            "precision": report.precision,
            "recall": report.recall,
            "false_positive_rate": report.false_positive_rate,
        }
        self.retrains.append(entry)
        self.log(
            f"reward classifier retrained with {self._used} rejected successes: threshold {report.threshold:.3f}, "
            f"held-out precision {report.precision:.3f}, recall {report.recall:.3f}, FPR {report.false_positive_rate:.4f}"
        )

    def summary(self) -> dict:
        return {
            "human_rejections": len(self.rejected),
            "confirmed_successes": self.confirmed,
            "classifier_retrains": self.retrains,
        }
