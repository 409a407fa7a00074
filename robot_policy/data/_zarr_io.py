"""zarr plumbing for the episode store: codecs, array creation, the ordered commit write.

Kept apart from ``store.py`` because it touches zarr-python 3 internals that may move between
releases (``AsyncArray`` construction for the commit write, the numcodecs wrapper base class).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numcodecs
import numpy as np
import zarr

# Codecs an image key may use. Default "jpegxl" (lossless): the cheapest to encode and the
# smallest lossless option on rendered and noisy 640x480 frames; "blosc" decodes ~10x faster.
# docs/store.md has the measured table this choice comes from.
IMAGE_CODECS = ("jpegxl", "blosc", "jpegxl-lossy", "jpeg2k")
DEFAULT_IMAGE_CODEC = "jpegxl"
LOWDIM_CODEC = "blosc"

# Low-dim keys: chunks along time only, about this many bytes per chunk (Diffusion Policy uses
# ~2 MB); capped in frames so the read-modify-write of the last chunk on append stays cheap.
LOWDIM_CHUNK_BYTES = 1 << 20
LOWDIM_CHUNK_MAX_FRAMES = 4096

_registered = False


# Blosc settings: (cname, clevel, shuffle). Images: zstd level 1 writes ~2x faster than level
# 3 for 3.4x vs 4.4x size ratio (docs/store.md). Low-dim chunks are small: compress harder.
BLOSC_IMAGE = ("zstd", 1, "noshuffle")
BLOSC_LOWDIM = ("zstd", 5, "shuffle")
_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


def _numcodec(name: str, image: bool = True) -> numcodecs.abc.Codec:
    """The numcodecs (zarr-2-compatible) codec object for a codec name."""
    import imagecodecs.numcodecs as inc

    if name == "blosc":
        cname, clevel, shuffle = BLOSC_IMAGE if image else BLOSC_LOWDIM
        return numcodecs.Blosc(cname=cname, clevel=clevel, shuffle=_SHUFFLE[shuffle])
    if name == "jpegxl":
        # imagecodecs' JPEG-XL is lossless only when asked; say it explicitly.
        return inc.Jpegxl(lossless=True, effort=1)
    if name == "jpegxl-lossy":
        return inc.Jpegxl(lossless=False, level=95, effort=1)
    if name == "jpeg2k":
        # Diffusion Policy's real-robot datasets use JPEG2000 at level 50 (lossy).
        return inc.Jpeg2k(level=50)
    raise ValueError(f"unknown codec {name!r}; choose one of {IMAGE_CODECS}")


_IMAGE_CODEC_CLASSES: dict[str, type] = {}


def __getattr__(name: str):
    # Unpickling looks the codec classes up here, possibly before anything registered them.
    register_codecs()
    if name in _IMAGE_CODEC_CLASSES:
        return _IMAGE_CODEC_CLASSES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _quiet_init(self, **codec_config) -> None:
    # zarr warns on every construction (each open of an image array) that numcodecs codecs are
    # outside the v3 spec; that is known and documented in docs/store.md.
    from zarr.codecs.numcodecs._codecs import _NumcodecsArrayBytesCodec

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _NumcodecsArrayBytesCodec.__init__(self, **codec_config)


def register_codecs() -> None:
    """Make imagecodecs' codecs readable from zarr format 2 and 3 stores (idempotent)."""
    global _registered
    if _registered:
        return
    import imagecodecs.numcodecs as inc
    from zarr.codecs.numcodecs._codecs import _NumcodecsArrayBytesCodec
    from zarr.registry import register_codec

    inc.register_codecs()  # numcodecs registry: format-2 arrays name them in "compressor"
    # Format 3 needs an array->bytes codec class per image codec, named "numcodecs.<id>".
    for cls_name in ("Jpegxl", "Jpeg2k", "Jpeg", "Png", "Qoi", "Webp"):
        codec_id = getattr(inc, cls_name).codec_id
        cls = type(cls_name, (_NumcodecsArrayBytesCodec,), {"__init__": _quiet_init}, codec_name=codec_id)
        cls.__module__ = __name__  # picklable (zarr arrays sent to spawned DataLoader workers)
        _IMAGE_CODEC_CLASSES[cls_name] = cls
        register_codec(f"numcodecs.{codec_id}", cls)
    _registered = True


def is_image_spec(dtype: str, shape: tuple[int, ...]) -> bool:
    """uint8 (H, W) or (H, W, C) with C in 1, 3, 4: eligible for an image codec."""
    return dtype == "uint8" and (len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4)))


def chunk_frames(dtype: str, shape: tuple[int, ...], image: bool) -> int:
    """Frames per chunk: one for images (random access per frame), ~1 MB otherwise."""
    if image:
        return 1
    frame_bytes = max(1, int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
    return int(max(1, min(LOWDIM_CHUNK_MAX_FRAMES, LOWDIM_CHUNK_BYTES // frame_bytes)))


def create_data_array(
    group: zarr.Group, name: str, dtype: str, shape: tuple[int, ...], codec: str, zarr_format: int
):
    """An empty ``(0, *shape)`` array chunked along time with ``codec``."""
    register_codecs()
    image = codec != "blosc" or is_image_spec(dtype, shape)
    chunks = (chunk_frames(dtype, shape, image), *shape)
    kwargs: dict[str, Any] = dict(shape=(0, *shape), chunks=chunks, dtype=dtype, fill_value=0)
    nc = _numcodec(codec, image)
    if zarr_format == 2:
        kwargs["compressors"] = nc
        return group.create_array(name, **kwargs)
    if codec == "blosc":
        from zarr.codecs import BloscCodec

        cname, clevel, shuffle = BLOSC_IMAGE if image else BLOSC_LOWDIM
        kwargs["compressors"] = BloscCodec(cname=cname, clevel=clevel, shuffle=shuffle)
    else:
        from zarr.registry import get_codec_class

        cfg = {k: v for k, v in nc.get_config().items() if k != "id"}
        kwargs["serializer"] = get_codec_class(f"numcodecs.{nc.codec_id}")(**cfg)
        kwargs["compressors"] = None
    return group.create_array(name, **kwargs)


def create_episode_ends(meta: zarr.Group, zarr_format: int):
    """``meta/episode_ends``: int64, uncompressed like Diffusion Policy's, one big chunk."""
    kwargs: dict[str, Any] = dict(shape=(0,), chunks=(1 << 16,), dtype="int64", fill_value=0)
    if zarr_format == 2:
        kwargs["compressors"] = None
    else:
        from zarr.codecs import ZstdCodec

        kwargs["compressors"] = ZstdCodec(level=1)  # 64k zeros compress to nothing
    return meta.create_array("episode_ends", **kwargs)


def append_commit_value(arr: zarr.Array, value: int) -> zarr.Array:
    """Append one value to a 1-D array with the shape change as the LAST write.

    ``arr.resize`` writes the new shape first and the chunk afterwards; a kill in between would
    expose a fill value as an episode end. Here the chunk holding the new element is written
    through a view with the larger shape (nothing written for the metadata), and only then the
    array's metadata file, replaced atomically by zarr's LocalStore (temp file + rename), makes
    the element visible. That metadata write is the store's single commit point.
    """
    from zarr.core.array import Array, AsyncArray

    n = arr.shape[0]
    aa = arr._async_array
    ghost = Array(
        AsyncArray(metadata=aa.metadata.update_shape((n + 1,)), store_path=aa.store_path, config=aa.config)
    )
    ghost[n] = value
    arr.resize((n + 1,))
    return arr


# Writer locks held by this process: realpath -> [descriptor, number of EpisodeStore handles].
# flock conflicts even between two descriptors of one process, so handles in one process share
# one lock; paths with an episode open in this process are tracked so that a second handle
# never truncates that episode as a "crashed tail".
_LOCKS: dict[str, list[int]] = {}
OPEN_EPISODES: set[str] = set()


def lock_for_writing(path: str) -> str:
    """Take the store's exclusive writer lock for this process; returns the key for ``unlock``.

    The lock is an flock on the ``data`` directory (its inode never changes, unlike metadata
    files that are replaced on every write) and the kernel releases it when the process dies,
    so a crashed writer never leaves a stale lock. A second writing process would truncate the
    first one's open episode as an uncommitted tail, so it is refused instead.
    """
    import fcntl

    key = os.path.realpath(path)
    if key in _LOCKS:
        _LOCKS[key][1] += 1
        return key
    from robot_policy.data.store import StoreError

    try:
        fd = os.open(os.path.join(key, "data"), os.O_RDONLY)
    except FileNotFoundError:
        raise StoreError(f"{path} is not an episode store: it has no data/ group") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(
            f"{path} is open for writing by another process; open it with mode='r' to read, "
            "or stop the other writer first"
        ) from None
    _LOCKS[key] = [fd, 1]
    return key


def unlock(key: str) -> None:
    entry = _LOCKS.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        os.close(entry[0])  # closing the descriptor releases the flock
        del _LOCKS[key]


def writer_active(path: str) -> bool:
    """True when some process holds the store open for writing."""
    import fcntl

    try:
        fd = os.open(os.path.join(path, "data"), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def open_group(path: str, mode: str) -> zarr.Group:
    """Open a store of either zarr format, never trusting consolidated metadata (it goes stale)."""
    register_codecs()
    return zarr.open_group(path, mode=mode, use_consolidated=False)
