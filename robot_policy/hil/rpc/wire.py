"""Wire format of the actor/learner RPC: a msgpack envelope carrying safetensors bytes.

Every request and reply body is one msgpack map::

    {"v": 1, "meta": {...plain msgpack values...}, "tensors": <safetensors bytes> | nil}

``meta`` holds ids, counters and small status values; ``tensors`` holds every array (a batch
of transitions, a set of actor weights) as one safetensors blob. Nothing is ever unpickled:
msgpack decodes to plain values (strict map keys, bounded nesting) and safetensors parses a
length-prefixed JSON header and raw buffers.

Decoding is a check of untrusted bytes: a body larger than ``max_bytes``, a map that is not
the envelope, an unknown version, or tensors of a dtype outside bool/uint8/int32/int64/
float16/32/64 raise :class:`WireError` with a message naming what was wrong. The server maps
that to ``INVALID_ARGUMENT`` and keeps serving.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

__all__ = ["WIRE_VERSION", "WireError", "pack", "unpack", "check_transitions"]

WIRE_VERSION = 1
"""Envelope version; a peer speaking another one is refused with a message naming both."""
ACCEPTED_DTYPES = frozenset(
    np.dtype(d) for d in ("bool", "uint8", "int32", "int64", "float16", "float32", "float64")
)
"""Array dtypes that may travel (observations, actions, rewards, flags, weights)."""
_MAX_META_BYTES = 64 * 1024
"""Largest msgpack ``meta`` part: ids and counters only, so anything bigger is malformed."""


class WireError(ValueError):
    """A body that is not a valid envelope (or does not fit the limits); the message says why."""


def pack(meta: dict[str, Any] | None = None, arrays: dict[str, np.ndarray] | None = None) -> bytes:
    """One envelope: ``meta`` (plain msgpack values) and ``arrays`` (as safetensors bytes)."""
    tensors = None
    if arrays:
        from safetensors.numpy import save

        bad = {
            k: str(np.asarray(v).dtype)
            for k, v in arrays.items()
            if np.asarray(v).dtype not in ACCEPTED_DTYPES
        }
        if bad:
            raise WireError(
                f"cannot send arrays of dtypes {bad}: accepted are {sorted(map(str, ACCEPTED_DTYPES))}"
            )
        tensors = save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
    return msgpack.packb({"v": WIRE_VERSION, "meta": meta or {}, "tensors": tensors}, use_bin_type=True)


def unpack(body: bytes, max_bytes: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(meta, arrays)`` from an envelope, checked; raises :class:`WireError` naming the problem."""
    if not isinstance(body, bytes | bytearray | memoryview):
        raise WireError(f"expected a binary body, got {type(body).__name__}")
    if len(body) > max_bytes:
        raise WireError(f"body of {len(body)} bytes exceeds the limit of {max_bytes} bytes")
    try:
        # max_bin_len bounds the tensors blob; the other limits keep a hostile map small.
        env = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            max_bin_len=max_bytes,
            max_str_len=_MAX_META_BYTES,
            max_array_len=4096,
            max_map_len=4096,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise WireError(f"not a msgpack envelope ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(env, dict) or set(env) != {"v", "meta", "tensors"}:
        got = sorted(env) if isinstance(env, dict) else type(env).__name__
        raise WireError(f"expected a map with keys ['meta', 'tensors', 'v'], got {got}")
    if env["v"] != WIRE_VERSION:
        raise WireError(f"wire version {env['v']!r} is not supported (this side speaks {WIRE_VERSION})")
    meta, tensors = env["meta"], env["tensors"]
    if not isinstance(meta, dict):
        raise WireError(f"'meta' must be a map, got {type(meta).__name__}")
    if tensors is None:
        return meta, {}
    if not isinstance(tensors, bytes):
        raise WireError(f"'tensors' must be safetensors bytes or nil, got {type(tensors).__name__}")
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        arrays = load(tensors)
    except (SafetensorError, ValueError, TypeError) as e:
        # numpy cannot hold bf16/f8: safetensors raises TypeError for those.
        raise WireError(f"'tensors' is not a valid safetensors blob ({str(e)[:200]})") from None
    bad = {k: str(v.dtype) for k, v in arrays.items() if v.dtype not in ACCEPTED_DTYPES}
    if bad:
        raise WireError(f"arrays of dtypes {bad} are not accepted")
    return meta, arrays


def check_transitions(
    arrays: dict[str, np.ndarray], spec: dict[str, tuple[tuple[int, ...], str]] | None, max_count: int
) -> int:
    """Number of transitions in a pushed batch, after checking it against ``spec``.

    ``spec`` maps every key the learner expects to ``(per-transition shape, dtype)``; ``None``
    accepts any keys (only the shared leading dimension is checked). Extra or missing keys, a
    shape or dtype other than the spec's, non-finite floats, ragged leading dimensions or more
    than ``max_count`` transitions raise :class:`WireError`.
    """
    if not arrays:
        raise WireError("a push carries no arrays")
    if spec is not None:
        missing, extra = sorted(set(spec) - set(arrays)), sorted(set(arrays) - set(spec))
        if missing or extra:
            raise WireError(
                f"transition keys do not match the learner's: missing {missing}, unexpected {extra}"
            )
    lengths = {k: (v.shape[0] if v.ndim else None) for k, v in arrays.items()}
    n_set = set(lengths.values())
    if len(n_set) != 1 or None in n_set:
        raise WireError(f"every array needs the same leading (transition) dimension, got {lengths}")
    n = n_set.pop()
    if n == 0 or n > max_count:
        raise WireError(f"a push carries {n} transitions; allowed are 1..{max_count}")
    for k, v in arrays.items():
        if spec is not None:
            shape, dtype = spec[k]
            if tuple(v.shape[1:]) != tuple(shape) or v.dtype != np.dtype(dtype):
                raise WireError(
                    f"'{k}' has per-transition shape {tuple(v.shape[1:])} and dtype {v.dtype}; "
                    f"the learner expects {tuple(shape)} {np.dtype(dtype)}"
                )
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            raise WireError(f"'{k}' holds NaN or inf")
    return n
