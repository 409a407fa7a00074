"""Copy a store into a new one with another zarr format or image codec.

Typical uses: record with the default lossless JPEG-XL (small, cheap to write) and convert to
Blosc for image-heavy training (about 10x faster to decode), or to zarr format 2 for
Diffusion Policy / UMI tooling, or to lossy JPEG-XL for archiving.
"""

from __future__ import annotations

import os

from robot_policy.data.store import EpisodeStore

# Frames copied per block: bounds memory for long full-resolution episodes.
BLOCK_FRAMES = 64


def convert_store(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    zarr_format: int | None = None,
    image_codec: str | None = None,
    fps: float | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> EpisodeStore:
    """Copy every committed episode and its metadata from ``src`` to a new store ``dst``.

    ``zarr_format`` / ``image_codec``: None keeps the source's (codec: per key, as recorded;
    a store made by other tools gets the default codecs). ``fps`` is required when the source
    does not record one (stores made by other tools). Returns ``dst`` opened read-only.
    """
    source = EpisodeStore.open(src, "r")
    fps = fps or source.fps
    if not fps:
        raise ValueError(f"{src} does not record its fps; pass fps= (the control rate it was recorded at)")
    schema = source.schema
    if image_codec is not None:
        for spec in schema.values():
            spec.codec = None  # fall back to the store-wide image_codec for image keys
    kwargs = {"image_codec": image_codec} if image_codec else {}
    info = source.attrs
    target = EpisodeStore.create(
        dst,
        schema,
        fps=fps,
        robot=source.robot,
        zarr_format=zarr_format or source.zarr_format,
        overwrite=overwrite,
        attrs={**info, "converted_from": str(src)},
        **kwargs,
    )
    from tqdm import tqdm

    try:
        for i in tqdm(range(source.num_episodes), desc="convert", unit="ep", disable=not progress):
            s = source.episode_slice(i)
            w = target.begin_episode(source.episode_meta(i))
            for a in range(s.start, s.stop, BLOCK_FRAMES):
                b = min(s.stop, a + BLOCK_FRAMES)
                w.extend({k: source.array(k)[a:b] for k in source.keys})
            w.commit()
    finally:
        target.close()
    return EpisodeStore.open(dst, "r")
