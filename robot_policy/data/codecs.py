"""Image and low-dim codecs of the episode store: names, numcodecs objects, zarr registration.

The public codec API of ``robot_policy.data`` (benchmarks and converters use it; the store
creates its arrays with it). Codecs are named by short strings ("jpegxl", "blosc", ...) in
``KeySpec.codec`` and in ``EpisodeStore.create(image_codec=...)``; ``numcodec(name)`` turns a
name into the codec object, and ``register_codecs()`` makes imagecodecs' codecs readable from
zarr format 2 and 3 stores. Kept apart from ``_zarr_io`` because the registration subclasses a
zarr-python 3 internal (the numcodecs wrapper base class) that may move between releases.
Importing this module is cheap (numcodecs, imagecodecs and zarr load on first use), so the CLI
can offer the codec names in ``--help`` without importing zarr.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numcodecs

# Codecs an image key may use. Default "jpegxl" (lossless): the cheapest to encode and the
# smallest lossless option on rendered and noisy 640x480 frames; "blosc" decodes ~10x faster.
# docs/store.md has the measured table this choice comes from.
IMAGE_CODECS = ("jpegxl", "blosc", "jpegxl-lossy", "jpeg2k")
DEFAULT_IMAGE_CODEC = "jpegxl"
LOWDIM_CODEC = "blosc"

_registered = False


# Blosc settings: (cname, clevel, shuffle). Images: zstd level 1 writes ~2x faster than level
# 3 for 3.4x vs 4.4x size ratio (docs/store.md). Low-dim chunks are small: compress harder.
BLOSC_IMAGE = ("zstd", 1, "noshuffle")
BLOSC_LOWDIM = ("zstd", 5, "shuffle")
_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


def numcodec(name: str, image: bool = True) -> numcodecs.abc.Codec:
    """The numcodecs (zarr-2-compatible) codec object for a codec name.

    ``image`` picks the Blosc settings for "blosc" (image keys: fast; low-dim keys: tighter).
    """
    import imagecodecs.numcodecs as inc
    import numcodecs

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
    # Dunder probes (the import system asks for __path__) must not load zarr.
    if not name.startswith("__"):
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
