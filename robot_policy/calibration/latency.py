"""Latency measurement, UMI's two methods.

**Camera latency, displayed-timestamp method.** A screen shows the host clock as a QR code
(:func:`timestamp_image`, refreshed every frame of the display); the camera films it; each frame
is decoded (:func:`decode_timestamp`) and compared with the time the pipeline gives that frame
(its arrival time, or the capture stamp a backend computed). ``stamp - displayed`` is the latency
plus the age of the displayed value: a value stays on screen for one refresh period, so on
average it is half a period old when captured, which :func:`camera_latency` subtracts (pass the
display's refresh rate; the screen's own input lag, a few ms on a gaming monitor, is not removed).

**Arm latency, cross-correlation.** Command a motion with rich frequency content (a sum of
sines or a chirp) and record the commanded and measured joint positions with their host
stamps. The lag that best aligns ``measured(t)`` with ``commanded(t - lag)`` (normalised
cross-correlation of the mean-removed signals, refined to sub-sample precision) is the arm's
effective latency: transport and controller dead time plus the tracking lag of its servo loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_policy.calibration.board import cv2_module
from robot_policy.calibration.intrinsics import CalibrationError, load_images

STAMPS_FILE = "stamps.json"
"""In a camera-latency folder: ``{"<image file>": stamp_s, ...}`` on the host clock."""


# -- camera ----------------------------------------------------------------------------------
def timestamp_image(t: float, module_px: int = 8) -> np.ndarray:
    """A QR code of ``t`` (seconds, 6 decimals) as a uint8 greyscale image with a white quiet zone."""
    cv2 = cv2_module()
    qr = cv2.QRCodeEncoder.create().encode(f"{t:.6f}")
    img = cv2.resize(qr, None, fx=module_px, fy=module_px, interpolation=cv2.INTER_NEAREST)
    return cv2.copyMakeBorder(
        img, 4 * module_px, 4 * module_px, 4 * module_px, 4 * module_px, cv2.BORDER_CONSTANT, value=255
    )


_QR: list = []


def decode_timestamp(image: np.ndarray) -> float | None:
    """The timestamp shown in ``image`` (a QR code from :func:`timestamp_image`), or None."""
    cv2 = cv2_module()
    if not _QR:
        # The ArUco-based detector decodes every code tested here; the classic one misses ~0.5 %
        # of timestamps (certain payloads), so it is only the fallback.
        _QR.extend([cv2.QRCodeDetectorAruco(), cv2.QRCodeDetector()])
    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    for detector in _QR:
        text, _, _ = detector.detectAndDecode(img)
        try:
            return float(text)
        except ValueError:
            continue
    return None


@dataclass
class LatencyResult:
    """A latency estimate (s) and the evidence for it."""

    latency_s: float
    """The estimate."""
    samples: int
    """Measurements it rests on."""
    details: dict[str, Any] = field(default_factory=dict)
    """Method-specific statistics (spread, correlation, rejected samples)."""

    def to_json(self) -> dict[str, Any]:
        return {"latency_s": self.latency_s, "samples": self.samples, **self.details}


def camera_latency(displayed_s, stamps_s, display_hz: float | None = None) -> LatencyResult:
    """Latency from decoded screen timestamps and the pipeline's stamps of the same frames.

    ``display_hz``: the screen's refresh rate; half its period is subtracted (the mean age of a
    displayed value). The median is used so a few misdecoded or doubly exposed frames do not move it.
    """
    d = np.asarray(displayed_s, dtype=np.float64)
    s = np.asarray(stamps_s, dtype=np.float64)
    if d.shape != s.shape or d.ndim != 1:
        raise ValueError(f"displayed and stamps must be equal-length 1-D, got {d.shape} and {s.shape}")
    if len(d) < 5:
        raise CalibrationError(f"camera latency needs >= 5 decoded frames, got {len(d)}")
    raw = s - d
    age = 0.5 / display_hz if display_hz else 0.0
    med = float(np.median(raw))
    # Frames whose value is off by more than 0.5 s are misreads (or a frozen screen): drop them.
    keep = np.abs(raw - med) < 0.5
    raw = raw[keep]
    est = float(np.median(raw)) - age
    return LatencyResult(
        latency_s=est,
        samples=int(keep.sum()),
        details={
            "method": "displayed_timestamp",
            "display_hz": display_hz,
            "display_age_s": age,
            "raw_median_s": float(np.median(raw)),
            "raw_std_s": float(np.std(raw)),
            "raw_p05_s": float(np.percentile(raw, 5)),
            "raw_p95_s": float(np.percentile(raw, 95)),
            "rejected": int((~keep).sum()),
        },
    )


def camera_latency_from_folder(folder: str | Path, display_hz: float | None = None) -> LatencyResult:
    """Decode every image of ``folder`` and pair it with its stamp from ``stamps.json``."""
    folder = Path(folder)
    stamps_path = folder / STAMPS_FILE
    if not stamps_path.is_file():
        raise CalibrationError(f'{folder}: no {STAMPS_FILE} ({{"<image file>": stamp_s}} on the host clock)')
    stamps = json.loads(stamps_path.read_text())
    displayed, got, undecoded = [], [], []
    for name, img in load_images(folder):
        if name not in stamps:
            raise CalibrationError(f"{stamps_path} has no stamp for {name}")
        t = decode_timestamp(img)
        if t is None:
            undecoded.append(name)
            continue
        displayed.append(t)
        got.append(float(stamps[name]))
    result = camera_latency(displayed, got, display_hz)
    result.details["undecoded"] = undecoded
    return result


# -- arm -------------------------------------------------------------------------------------
@dataclass
class ExcitationConfig:
    """The motion commanded to measure an arm's latency live (``calibrate latency --live``): a sum
    of sines on one joint around where the arm stands, faded in and out so it starts and ends at rest."""

    joint: str = ""
    """Joint to move (a name of the hardware config); empty: the last arm joint (a wrist joint:
    the least mass in motion, the least room needed)."""
    amplitude_deg: float = 3.0
    """Peak excursion (degrees)."""
    freqs_hz: list[float] = field(default_factory=lambda: [0.3, 0.7, 1.3, 2.1])
    """Frequencies of the sines (Hz); several, so the correlation has one clear peak."""
    duration_s: float = 8.0
    """Length of the motion (s); at least 4 x the longest latency searched."""
    ramp_s: float = 1.0
    """Fade-in and fade-out (s) at both ends."""
    rate_hz: float = 100.0
    """Points per second of the commanded trajectory (the controller interpolates between them)."""

    def __post_init__(self):
        if not 0.0 < self.amplitude_deg <= 20.0:
            raise ValueError(f"excitation: amplitude_deg must be in (0, 20], got {self.amplitude_deg}")
        if not self.freqs_hz or min(self.freqs_hz) <= 0:
            raise ValueError(f"excitation: freqs_hz must be positive frequencies, got {self.freqs_hz}")
        if self.duration_s < 2 * self.ramp_s + 1.0 or self.ramp_s < 0 or self.rate_hz <= 0:
            raise ValueError(
                f"excitation: need duration_s >= 2 ramp_s + 1 and rate_hz > 0, got duration_s "
                f"{self.duration_s}, ramp_s {self.ramp_s}, rate_hz {self.rate_hz}"
            )

    def offsets(self, t) -> np.ndarray:
        """Joint offset (rad) at times ``t`` (s from the start): peak ``amplitude_deg``."""
        t = np.asarray(t, dtype=np.float64)
        grid = np.arange(0.0, self.duration_s, 0.001)
        return np.interp(t, grid, self._raw(grid) * (np.radians(self.amplitude_deg) / self._peak()))

    def peak_velocity(self) -> float:
        """Largest joint speed of the motion (rad/s)."""
        grid = np.arange(0.0, self.duration_s, 0.001)
        return float(np.abs(np.gradient(self.offsets(grid), grid)).max())

    def _raw(self, t: np.ndarray) -> np.ndarray:
        y = sum(np.sin(2 * np.pi * f * t + 1.3 * k) / (k + 1) for k, f in enumerate(self.freqs_hz))
        if self.ramp_s > 0:
            fade = np.clip(np.minimum(t, self.duration_s - t) / self.ramp_s, 0.0, 1.0)
            y = y * (0.5 - 0.5 * np.cos(np.pi * fade))
        return y

    def _peak(self) -> float:
        return float(np.abs(self._raw(np.arange(0.0, self.duration_s, 0.001))).max())


def _as_trace(t, q, what: str) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    q = np.asarray(q, dtype=np.float64)
    q = q.reshape(len(t), -1) if q.size else q
    if len(t) < 10 or q.shape[0] != len(t):
        raise ValueError(f"{what}: need >= 10 samples with one stamp each, got t {t.shape}, q {q.shape}")
    order = np.argsort(t, kind="stable")
    return t[order], q[order]


def arm_latency(
    t_cmd,
    q_cmd,
    t_meas,
    q_meas,
    max_lag_s: float = 0.5,
    dt: float = 0.001,
    min_motion: float = 1e-3,
) -> LatencyResult:
    """Effective arm latency: the lag maximising the correlation of measured with commanded motion.

    Traces are resampled on a common ``dt`` grid; joints that moved less than ``min_motion``
    (std, rad) are ignored; the correlation is summed over the moving joints, searched over
    ``[-max_lag_s, max_lag_s]`` (a negative answer means the stamps are wrong: the arm cannot
    move before it is told to) and refined by a parabola through the peak.
    """
    tc, qc = _as_trace(t_cmd, q_cmd, "commanded")
    tm, qm = _as_trace(t_meas, q_meas, "measured")
    if qc.shape[1] != qm.shape[1]:
        raise ValueError(f"commanded has {qc.shape[1]} joints, measured {qm.shape[1]}")
    lo, hi = max(tc[0], tm[0]), min(tc[-1], tm[-1])
    n_lag = int(round(max_lag_s / dt))
    if hi - lo < 4 * max_lag_s:
        raise CalibrationError(
            f"traces overlap for {hi - lo:.2f} s; need >= {4 * max_lag_s:.2f} s (4 x max_lag_s) of motion"
        )
    grid = np.arange(lo, hi, dt)
    moving = [
        j for j in range(qc.shape[1]) if np.std(qc[:, j]) > min_motion and np.std(qm[:, j]) > min_motion
    ]
    if not moving:
        raise CalibrationError(f"no joint moved more than {min_motion} (std) in both traces")
    lags = np.arange(-n_lag, n_lag + 1)
    total = np.zeros(len(lags))
    per_joint = {}
    for j in moving:
        c = np.interp(grid, tc, qc[:, j])
        m = np.interp(grid, tm, qm[:, j])
        corr = _xcorr(c, m, lags)
        per_joint[j] = _peak(corr, lags) * dt
        total += corr
    total /= len(moving)
    lag = _peak(total, lags) * dt
    return LatencyResult(
        latency_s=lag,
        samples=len(grid),
        details={
            "method": "cross_correlation",
            "peak_correlation": float(total.max()),
            "joints_used": moving,
            "per_joint_latency_s": {str(j): v for j, v in per_joint.items()},
            "resample_dt_s": dt,
            "max_lag_s": max_lag_s,
            "duration_s": float(hi - lo),
            "warning": "negative latency: commanded and measured stamps are not on one clock"
            if lag < 0
            else "",
        },
    )


def _xcorr(c: np.ndarray, m: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """Normalised correlation of ``m[k]`` with ``c[k - lag]`` for every lag (mean removed per overlap)."""
    out = np.empty(len(lags))
    n = len(c)
    for i, lag in enumerate(lags):
        if lag >= 0:
            a, b = c[: n - lag], m[lag:]
        else:
            a, b = c[-lag:], m[: n + lag]
        a = a - a.mean()
        b = b - b.mean()
        den = np.sqrt((a @ a) * (b @ b))
        out[i] = (a @ b) / den if den > 0 else 0.0
    return out


def _peak(corr: np.ndarray, lags: np.ndarray) -> float:
    """Lag of the maximum, refined by a parabola through it and its neighbours (in samples)."""
    i = int(np.argmax(corr))
    if 0 < i < len(corr) - 1:
        y0, y1, y2 = corr[i - 1], corr[i], corr[i + 1]
        den = y0 - 2 * y1 + y2
        if den < 0:
            return float(lags[i] + 0.5 * (y0 - y2) / den)
    return float(lags[i])


def load_traces(path: str | Path) -> dict[str, np.ndarray]:
    """Read an arm-latency trace file: ``{"commanded": {"t": [...], "q": [[...]]}, "measured": {...}}``."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"trace file {path} does not exist")
    data = json.loads(path.read_text())
    out = {}
    for key in ("commanded", "measured"):
        if key not in data or "t" not in data[key] or "q" not in data[key]:
            raise CalibrationError(
                f'{path}: needs "{key}": {{"t": [s, ...], "q": [[rad, ...], ...]}} (host-clock stamps)'
            )
        out[f"t_{key}"] = np.asarray(data[key]["t"], dtype=np.float64)
        out[f"q_{key}"] = np.asarray(data[key]["q"], dtype=np.float64)
    return out


def save_traces(path: str | Path, t_cmd, q_cmd, t_meas, q_meas) -> None:
    """Write a trace file (the format :func:`load_traces` reads)."""
    doc = {
        "commanded": {"t": np.asarray(t_cmd).tolist(), "q": np.asarray(q_cmd).tolist()},
        "measured": {"t": np.asarray(t_meas).tolist(), "q": np.asarray(q_meas).tolist()},
    }
    Path(path).write_text(json.dumps(doc))
