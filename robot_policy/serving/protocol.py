"""The wire protocol: openpi's websocket policy protocol, with typed requests.

openpi's protocol (``openpi_client/websocket_client_policy.py``, ``openpi/serving/
websocket_policy_server.py``), which this server and client both speak:

1. the client opens a websocket (``Authorization: Api-Key KEY`` header when a key is set);
2. the server sends one binary frame: the metadata dict (msgpack-numpy);
3. then, repeatedly: the client sends an observation dict (binary frame), the server answers
   with a dict holding ``actions`` (horizon x dim) and ``server_timing`` (binary frame), or
   with a **text** frame carrying an error message.

What this module adds, all optional for a client (openpi's client never sends them):

* the metadata describes the model: ``observation: {key: {shape, dtype}}``, ``action: {dim,
  horizon, fps}``, ``model``, ``sampler``, ``normalization``, ``limits``, ``protocol``;
* a request may carry ``options`` (a dict under the key ``"options"``): the scheduled plan as
  ``prior`` (+ RTC ``prior_weights``), sampler ``num_steps``, a tighter ``deadline_ms`` and an
  ``id`` echoed in the reply. A server that does not list ``options`` in its metadata
  (openpi's) is never sent them;
* error text frames start with a code: ``bad_request:``, ``busy:``, ``deadline:``,
  ``internal:``, ``unavailable:``.

No torch here: the client imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

PROTOCOL_NAME = "openpi-websocket"
"""What ``metadata["protocol"]["name"]`` says: openpi's websocket protocol."""
PROTOCOL_VERSION = 1
OPTIONS_KEY = "options"
"""Request key holding this project's optional per-request settings."""
OPTION_NAMES = (
    "prior",
    "prior_weights",
    "prior_n_known",
    "prior_delay_steps",
    "num_steps",
    "deadline_ms",
    "id",
)
ERROR_CODES = ("bad_request", "busy", "deadline", "internal", "unavailable")
MAX_STEPS = 1000
"""Largest ``num_steps`` a request may ask for."""


class ProtocolError(ValueError):
    """A request or reply that does not follow the protocol; the message names the field."""


class RequestError(Exception):
    """What the server answers with a text frame: ``f"{code}: {message}"``."""

    def __init__(self, code: str, message: str):
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code

    def frame(self) -> str:
        return f"{self.code}: {self}"


@dataclass(frozen=True)
class ArraySpec:
    """One observation entry as the server expects it on the wire."""

    shape: tuple[int, ...]
    """Full shape, history first: ``(n_obs_steps, *frame_shape)``."""
    dtype: str
    """numpy dtype name, e.g. 'float32', 'uint8'."""
    image: bool = False
    """An image key (uint8 HxWx3 frames)."""


@dataclass
class RemoteConfig:
    """What a remote policy looks like to the runner: the fields of ``PolicyConfig`` that the
    policy runner, the policy node and the episode loop read, filled from the metadata."""

    family: str = "remote"
    obs_keys: list[str] = field(default_factory=list)
    image_keys: list[str] = field(default_factory=list)
    obs_shapes: dict[str, list[int]] = field(default_factory=dict)
    action_key: str = "action"
    action_dim: int = 0
    fps: float = 20.0
    n_obs_steps: int = 1
    horizon: int = 1
    """Policy horizon (Tp): the chunk a reply carries has ``horizon - n_obs_steps + 1`` actions."""
    n_action_steps: int = 1


@dataclass
class Options:
    """Decoded ``options`` of a request (defaults: none given)."""

    prior: Any = None
    """``None``, raw actions (T, A) or a scheduler ``Prior`` (when RTC weights came along)."""
    num_steps: int | None = None
    deadline_ms: float | None = None
    id: int | None = None


# ------------------------------------------------------------------------------ metadata
def observation_specs(metadata: dict) -> dict[str, ArraySpec]:
    """``{key: ArraySpec}`` from ``metadata["observation"]``; raises ProtocolError naming the field."""
    obs = metadata.get("observation")
    if not isinstance(obs, dict) or not obs:
        raise ProtocolError(
            "metadata has no 'observation' {key: {shape, dtype}}: the server does not describe its "
            "inputs (an openpi server?); give the client a spec with 'observation' and 'action'"
        )
    out = {}
    for k, v in obs.items():
        try:
            shape = tuple(int(n) for n in v["shape"])
            dtype = np.dtype(str(v["dtype"])).name
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(
                f"metadata observation '{k}': expected {{shape, dtype}}, got {v!r} ({e})"
            ) from None
        # Not stated (a user's spec): uint8 arrays of 3+ dimensions are camera images.
        out[str(k)] = ArraySpec(shape, dtype, bool(v.get("image", dtype == "uint8" and len(shape) >= 3)))
    return out


def remote_config(metadata: dict) -> RemoteConfig:
    """The ``RemoteConfig`` a metadata dict describes (``observation``, ``action``, ``model``)."""
    specs = observation_specs(metadata)
    act = metadata.get("action")
    if not isinstance(act, dict) or "dim" not in act or "horizon" not in act or "fps" not in act:
        raise ProtocolError(f"metadata 'action' must be {{dim, horizon, fps}}, got {act!r}")
    model = metadata.get("model") if isinstance(metadata.get("model"), dict) else {}
    # With model.n_obs_steps (this project's servers) shapes lead with the history axis; without
    # (openpi servers, a user's spec) they are one frame, and the history is that one frame.
    n_obs = int(model.get("n_obs_steps") or 0)
    if n_obs:
        wrong = {k: s.shape for k, s in specs.items() if not s.shape or s.shape[0] != n_obs}
        if wrong:
            raise ProtocolError(f"metadata observation shapes {wrong} do not start with n_obs_steps={n_obs}")
    frame = {k: list(s.shape[1:]) if n_obs else list(s.shape) for k, s in specs.items()}
    n_obs = n_obs or 1
    chunk = int(act["horizon"])
    if chunk < 1 or int(act["dim"]) < 1 or not float(act["fps"]) > 0:
        raise ProtocolError(f"metadata 'action': dim and horizon must be >= 1 and fps > 0, got {act!r}")
    return RemoteConfig(
        family=str(model.get("family", "remote")),
        obs_keys=[k for k, s in specs.items() if not s.image],
        image_keys=[k for k, s in specs.items() if s.image],
        obs_shapes=frame,
        action_key=str(act.get("key", "action")),
        action_dim=int(act["dim"]),
        fps=float(act["fps"]),
        n_obs_steps=n_obs,
        horizon=chunk + n_obs - 1,
        n_action_steps=int(act.get("n_action_steps", chunk)),
    )


def interface(metadata: dict) -> dict:
    """The part of the metadata a client depends on (compared on reconnect: a server restarted
    with another model must not silently feed this robot)."""
    return {"observation": metadata.get("observation"), "action": metadata.get("action")}


# ------------------------------------------------------------------------------- requests
def _array(value, where: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise ProtocolError(f"{where}: expected a numpy array (msgpack-numpy), got {type(value).__name__}")
    return value


def decode_observation(msg: Any, specs: dict[str, ArraySpec]) -> dict[str, np.ndarray]:
    """Check a request's observation arrays against the metadata: every key, nothing else but
    ``options``, exact shapes, uint8 images, finite real numbers elsewhere (cast to float32).
    With one observation step the history axis may be left out (openpi clients send one frame)."""
    if not isinstance(msg, dict):
        raise ProtocolError(f"request must be a map {{key: array}}, got {type(msg).__name__}")
    bad_keys = [k for k in msg if not isinstance(k, str)]
    if bad_keys:
        raise ProtocolError(f"request keys must be strings, got {bad_keys[:3]!r}")
    missing = [k for k in specs if k not in msg]
    unknown = [k for k in msg if k not in specs and k != OPTIONS_KEY]
    if missing or unknown:
        raise ProtocolError(
            f"request keys: missing {missing}, unexpected {unknown}; expected {sorted(specs)}"
            f" (+ optional '{OPTIONS_KEY}') as metadata['observation'] lists"
        )
    out = {}
    for k, spec in specs.items():
        a = _array(msg[k], f"observation '{k}'")
        if a.shape != spec.shape:
            if spec.shape[0] == 1 and a.shape == spec.shape[1:]:
                a = a[None]
            else:
                raise ProtocolError(
                    f"observation '{k}': shape {a.shape}, expected {spec.shape} "
                    f"(history of {spec.shape[0]} frame(s) of {spec.shape[1:]})"
                )
        if spec.dtype == "uint8":
            if a.dtype != np.uint8:
                raise ProtocolError(f"observation '{k}': dtype {a.dtype}, expected uint8 (raw image)")
        elif a.dtype.kind not in "biuf":
            raise ProtocolError(f"observation '{k}': dtype {a.dtype} is not numeric")
        a = np.array(a, dtype=spec.dtype)  # a writable, native-order copy (decoded arrays are views)
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise ProtocolError(f"observation '{k}': contains NaN or inf")
        out[k] = a
    return out


def _int(value, where: str, lo: int, hi: int) -> int:
    if isinstance(value, np.integer):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ProtocolError(f"{where}: expected an integer in [{lo}, {hi}], got {value!r}")
    return value


def decode_options(msg: dict, action_dim: int, chunk_len: int, fps: float) -> Options:
    """The request's ``options`` (all optional), each checked; unknown names are an error."""
    raw = msg.get(OPTIONS_KEY)
    if raw is None:
        return Options()
    if not isinstance(raw, dict):
        raise ProtocolError(f"'{OPTIONS_KEY}' must be a map, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in OPTION_NAMES)
    if unknown:
        raise ProtocolError(f"unknown option(s) {unknown}; valid: {list(OPTION_NAMES)}")
    opts = Options()
    if raw.get("num_steps") is not None:
        opts.num_steps = _int(raw["num_steps"], "options.num_steps", 0, MAX_STEPS) or None
    if raw.get("id") is not None:
        opts.id = _int(raw["id"], "options.id", -(2**63), 2**63 - 1)
    if raw.get("deadline_ms") is not None:
        d = raw["deadline_ms"]
        if isinstance(d, bool) or not isinstance(d, int | float | np.number) or not 0 < float(d) < 1e7:
            raise ProtocolError(f"options.deadline_ms: expected milliseconds > 0, got {d!r}")
        opts.deadline_ms = float(d)
    if raw.get("prior") is not None:
        p = _array(raw["prior"], "options.prior")
        if p.ndim != 2 or p.shape[1] != action_dim or not 1 <= p.shape[0] <= chunk_len or p.dtype.kind != "f":
            raise ProtocolError(
                f"options.prior: expected float actions (T, {action_dim}) with 1 <= T <= {chunk_len}, "
                f"got {p.dtype} {p.shape}"
            )
        p = p.astype(np.float32)
        if not np.all(np.isfinite(p)):
            raise ProtocolError("options.prior: contains NaN or inf")
        opts.prior = p
        w = raw.get("prior_weights")
        if w is not None:
            w = _array(w, "options.prior_weights")
            if w.shape != (len(p),) or w.dtype.kind != "f" or not np.all((w >= 0) & (w <= 1)):
                raise ProtocolError(
                    f"options.prior_weights: expected float weights in [0, 1] of shape ({len(p)},), "
                    f"got {w.dtype} {w.shape}"
                )
            from robot_policy.inference.scheduler import Prior

            opts.prior = Prior(
                actions=p,
                weights=w.astype(np.float32),
                n_known=_int(raw.get("prior_n_known", len(p)), "options.prior_n_known", 0, len(p)),
                delay_steps=_int(raw.get("prior_delay_steps", 0), "options.prior_delay_steps", 0, len(p)),
                start_time=0.0,
                dt=1.0 / fps,
            )
    elif raw.get("prior_weights") is not None:
        raise ProtocolError("options.prior_weights given without options.prior")
    return opts


def encode_options(
    prior=None, num_steps: int | None = None, deadline_ms: float | None = None, id=None
) -> dict:
    """The ``options`` map of a request (a scheduler ``Prior`` or raw (T, A) actions as prior)."""
    out: dict = {}
    if prior is not None:
        acts = getattr(prior, "actions", prior)
        out["prior"] = np.ascontiguousarray(acts, dtype=np.float32)
        weights = getattr(prior, "weights", None)
        if weights is not None and np.any(np.asarray(weights) > 0):
            out["prior_weights"] = np.asarray(weights, dtype=np.float32)
            out["prior_n_known"] = int(prior.n_known)
            out["prior_delay_steps"] = int(prior.delay_steps)
    if num_steps:
        out["num_steps"] = int(num_steps)
    if deadline_ms is not None:
        out["deadline_ms"] = float(deadline_ms)
    if id is not None:
        out["id"] = int(id)
    return out


def parse_error(text: str) -> tuple[str, str]:
    """A text frame -> (code, message); openpi's tracebacks have no code: 'internal'."""
    code, sep, rest = text.partition(": ")
    if sep and code in ERROR_CODES:
        return code, rest
    return "internal", text
