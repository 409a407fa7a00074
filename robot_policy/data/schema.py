"""Per-key schema of an episode store and the validation every write goes through."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SUPPORTED_DTYPES = (
    "bool",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
)


class EpisodeValidationError(ValueError):
    """An episode (or one frame of it) does not match the store's schema; nothing was written."""


@dataclass
class KeySpec:
    """What one ``data/<key>`` array holds, per frame."""

    dtype: str
    """numpy dtype name of one frame, e.g. "float32" or "uint8" (images)."""
    shape: tuple[int, ...] = ()
    """Per-frame shape, e.g. (7,) for joints or (480, 640, 3) for an rgb image; () for a scalar."""
    names: list[str] | None = None
    """Optional names of the elements of a 1-D key (joint names, "x"/"y"/"z"...)."""
    units: str | None = None
    """Optional physical unit ("rad", "m", "rad/s"...)."""
    codec: str | None = None
    """Compression: None picks the store default (Blosc zstd; images: the store's image_codec)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form JSON-able description (camera serial, frame id...)."""

    def __post_init__(self) -> None:
        self.dtype = np.dtype(self.dtype).name
        if self.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"KeySpec dtype {self.dtype!r} is not supported; use one of {SUPPORTED_DTYPES}")
        self.shape = tuple(int(s) for s in self.shape)
        if any(s <= 0 for s in self.shape):
            raise ValueError(f"KeySpec shape {self.shape} has a non-positive dimension")
        if self.names is not None:
            self.names = [str(n) for n in self.names]
            if len(self.shape) != 1 or len(self.names) != self.shape[0]:
                raise ValueError(
                    f"KeySpec names has {len(self.names)} entries but shape is {self.shape}; names need a 1-D key of that length"
                )

    def to_json(self) -> dict:
        out: dict[str, Any] = {"dtype": self.dtype, "shape": list(self.shape)}
        if self.names is not None:
            out["names"] = list(self.names)
        if self.units is not None:
            out["units"] = self.units
        if self.codec is not None:
            out["codec"] = self.codec
        if self.extra:
            out["extra"] = self.extra
        return out

    @classmethod
    def from_json(cls, d: dict) -> KeySpec:
        return cls(
            dtype=d["dtype"],
            shape=tuple(d.get("shape", ())),
            names=d.get("names"),
            units=d.get("units"),
            codec=d.get("codec"),
            extra=dict(d.get("extra") or {}),
        )


def coerce_schema(schema: dict) -> dict[str, KeySpec]:
    """Accept ``{key: KeySpec | dict}``; key names must be valid zarr array names."""
    if not schema:
        raise ValueError("schema is empty: give at least one key, e.g. {'action': KeySpec('float32', (7,))}")
    out = {}
    for key, spec in schema.items():
        if not isinstance(key, str) or not key or "/" in key or key.startswith((".", "__")):
            raise ValueError(f"schema key {key!r} is not a valid array name (no '/', no leading '.' or '__')")
        # Copies: create() fills in the codec, and the caller may reuse its schema elsewhere.
        out[key] = KeySpec.from_json(spec.to_json() if isinstance(spec, KeySpec) else dict(spec))
    return out


def _first_bad(arr: np.ndarray) -> tuple[tuple[int, ...], Any]:
    idx = np.argwhere(~np.isfinite(arr))[0]
    return tuple(int(i) for i in idx), arr[tuple(idx)].item()


def validate_frames(
    schema: dict[str, KeySpec], frames: dict, episode: int, *, batched: bool, frame_offset: int = 0
) -> int:
    """Check keys, shapes, dtypes and finiteness; return the number of frames.

    ``batched``: arrays are ``(T, *shape)`` (add_episode / extend) rather than one frame.
    Raises EpisodeValidationError naming the key, the episode and the offending value.
    """
    where = f"episode {episode}"
    if not isinstance(frames, dict):
        raise EpisodeValidationError(f"{where}: expected a dict {{key: array}}, got {type(frames).__name__}")
    missing = [k for k in schema if k not in frames]
    unknown = [k for k in frames if k not in schema]
    if missing or unknown:
        msg = [f"{where}: keys do not match the store schema"]
        if missing:
            msg.append(f"missing {missing}")
        if unknown:
            msg.append(f"unknown {unknown} (the schema has {list(schema)})")
        raise EpisodeValidationError("; ".join(msg))
    lengths = {}
    for key, spec in schema.items():
        value = frames[key]
        if not isinstance(value, np.ndarray | np.generic):
            raise EpisodeValidationError(
                f"{where}, key {key!r}: expected a numpy array of dtype {spec.dtype}, got {type(value).__name__} "
                f"(convert with np.asarray(value, dtype=np.{spec.dtype}))"
            )
        arr = np.asarray(value)
        if arr.dtype.name != spec.dtype:
            raise EpisodeValidationError(
                f"{where}, key {key!r}: dtype {arr.dtype.name}, the schema says {spec.dtype} (convert with .astype(np.{spec.dtype}))"
            )
        frame_shape = arr.shape[1:] if batched else arr.shape
        if batched and arr.ndim == 0:
            frame_shape = None
        if frame_shape != spec.shape:
            got = arr.shape
            want = f"(T, {', '.join(map(str, spec.shape))})" if batched else str(spec.shape)
            raise EpisodeValidationError(f"{where}, key {key!r}: shape {got}, expected {want}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            idx, val = _first_bad(arr)
            if batched:
                frame, elem = frame_offset + idx[0], idx[1:]
            else:
                frame, elem = frame_offset, idx
            raise EpisodeValidationError(
                f"{where}, key {key!r}: non-finite value {val} at frame {frame}"
                + (f", element {elem}" if elem else "")
                + " (NaN/inf are rejected so they cannot poison normalization statistics)"
            )
        lengths[key] = arr.shape[0] if batched else 1
    if batched and len(set(lengths.values())) > 1:
        raise EpisodeValidationError(f"{where}: keys have different numbers of frames: {lengths}")
    return next(iter(lengths.values()))


def check_meta(meta: dict | None, episode: int) -> dict:
    """Metadata must be JSON-able (bool/int/float/str/None, lists and dicts of those)."""
    import json

    meta = dict(meta or {})

    def norm(v, path):
        if isinstance(v, np.generic):
            v = v.item()
        if v is None or isinstance(v, bool | int | str):
            return v
        if isinstance(v, float):
            if not np.isfinite(v):
                raise EpisodeValidationError(f"episode {episode}: metadata {path} = {v} is not finite")
            return v
        if isinstance(v, dict):
            return {str(k): norm(x, f"{path}.{k}") for k, x in v.items()}
        if isinstance(v, list | tuple | np.ndarray):
            return [norm(x, f"{path}[{i}]") for i, x in enumerate(v)]
        raise EpisodeValidationError(
            f"episode {episode}: metadata {path} = {v!r} ({type(v).__name__}) is not JSON-able; use bool/int/float/str, lists or dicts"
        )

    out = {str(k): norm(v, str(k)) for k, v in meta.items()}
    json.dumps(out)
    return out
