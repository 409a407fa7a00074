"""zarr plumbing for the episode store: array creation, the ordered commit write, writer locks.

Kept apart from ``store.py`` because it touches zarr-python 3 internals that may move between
releases (``AsyncArray`` construction for the commit write). Codecs live in ``codecs.py``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import zarr

from robot_policy.data.codecs import BLOSC_IMAGE, BLOSC_LOWDIM, is_image_spec, numcodec, register_codecs
from robot_policy.data.layout import DATA_GROUP, EPISODE_ENDS, StoreError

# Low-dim keys: chunks along time only, about this many bytes per chunk (Diffusion Policy uses
# ~2 MB); capped in frames so the read-modify-write of the last chunk on append stays cheap.
LOWDIM_CHUNK_BYTES = 1 << 20
LOWDIM_CHUNK_MAX_FRAMES = 4096


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
    nc = numcodec(codec, image)
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
    return meta.create_array(EPISODE_ENDS, **kwargs)


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
    try:
        fd = os.open(os.path.join(key, DATA_GROUP), os.O_RDONLY)
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


def locked_in_this_process(path: str) -> bool:
    """True when a handle of this process holds the store at ``path`` open for writing."""
    return os.path.realpath(path) in _LOCKS


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
        fd = os.open(os.path.join(path, DATA_GROUP), os.O_RDONLY)
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
