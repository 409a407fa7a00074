"""msgpack-numpy frames as openpi writes them, decoded with types checked.

Encoding is openpi's (``openpi_client/msgpack_numpy.py``), byte for byte: an array is a map
``{b"__ndarray__": True, b"data": raw bytes (C order), b"dtype": dtype.str, b"shape": [...]}``,
a numpy scalar ``{b"__npgeneric__": True, b"data": value, b"dtype": dtype.str}``, everything
else plain msgpack. So openpi's client and server read what this module writes, and this module
reads theirs.

Decoding is stricter than openpi's (which builds ``np.ndarray(buffer=..., dtype=<any string>)``
and would accept an object dtype pointing into attacker bytes): only bool, signed/unsigned
integer and float dtypes of 1-8 bytes, a shape of at most ``MAX_NDIM`` non-negative integers
whose size matches the byte count exactly, map keys that are strings or bytes, and msgpack's
own nesting limit. Nothing is ever unpickled. Anything else raises :class:`CodecError` naming
what was wrong.
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgpack
import numpy as np

__all__ = ["MAX_NDIM", "CodecError", "packb", "unpackb"]

MAX_NDIM = 8
"""Most dimensions an incoming array may have."""
_DTYPE = re.compile(r"[<>|=]?(b1|[iu][1248]|f[248])")
"""The dtype strings accepted: bool, int8-64, uint8-64, float16/32/64, any byte order."""
_ARRAY_KEYS = (b"__ndarray__", "__ndarray__")
_SCALAR_KEYS = (b"__npgeneric__", "__npgeneric__")


class CodecError(ValueError):
    """A frame that is not valid msgpack-numpy of the accepted types."""


def _encode(obj):
    if isinstance(obj, np.ndarray | np.generic) and obj.dtype.kind not in "biuf":
        raise CodecError(
            f"cannot send a numpy value of dtype {obj.dtype}: only bool, integer and float arrays "
            "travel (no object, string, complex or structured dtypes)"
        )
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise CodecError(
        f"cannot send a value of type {type(obj).__name__}: use dicts, lists, numbers, str, arrays"
    )


def packb(obj: Any) -> bytes:
    """``obj`` as one msgpack-numpy frame (openpi's encoding)."""
    return msgpack.packb(obj, default=_encode, use_bin_type=True)


def _field(obj: dict, name: str):
    if name.encode() in obj:
        return obj[name.encode()]
    return obj.get(name)


def _dtype(value) -> np.dtype:
    s = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    if not isinstance(s, str) or not _DTYPE.fullmatch(s):
        raise CodecError(
            f"array dtype {s!r} is not accepted: only bool, int8-64, uint8-64 and float16/32/64 "
            "(no object, string or structured dtypes)"
        )
    return np.dtype(s)


def _decode(obj: dict):
    if any(k in obj for k in _ARRAY_KEYS):
        dtype = _dtype(_field(obj, "dtype"))
        shape = _field(obj, "shape")
        if (
            not isinstance(shape, list | tuple)
            or len(shape) > MAX_NDIM
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        ):
            raise CodecError(
                f"array shape {shape!r} is not a list of at most {MAX_NDIM} non-negative integers"
            )
        data = _field(obj, "data")
        if not isinstance(data, bytes):
            raise CodecError(f"array data must be msgpack bin (bytes), got {type(data).__name__}")
        expected = math.prod(shape) * dtype.itemsize
        if len(data) != expected:
            raise CodecError(
                f"array of shape {tuple(shape)} and dtype {dtype.str} needs {expected} bytes, got {len(data)}"
            )
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    if any(k in obj for k in _SCALAR_KEYS):
        dtype = _dtype(_field(obj, "dtype"))
        value = _field(obj, "data")
        if not isinstance(value, bool | int | float):
            raise CodecError(f"numpy scalar data must be a number, got {type(value).__name__}")
        try:
            return dtype.type(value)
        except (OverflowError, ValueError) as e:
            raise CodecError(f"numpy scalar {value!r} does not fit dtype {dtype.str}: {e}") from None
    return obj


def unpackb(data: bytes | bytearray | memoryview) -> Any:
    """One msgpack-numpy frame -> Python objects with numpy arrays (read-only views of the frame)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected a binary frame, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=True)
    except CodecError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        # ExtraData, FormatError, StackError (nesting too deep), bad UTF-8, non-string map keys...
        raise CodecError(f"not a msgpack frame ({type(e).__name__}: {str(e)[:200]})") from None
