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
    import numcodecs

    if name == "blosc":
        cname, clevel, shuffle = BLOSC_IMAGE if image else BLOSC_LOWDIM
        return numcodecs.Blosc(cname=cname, clevel=clevel, shuffle=_SHUFFLE[shuffle])
    if name == "jpegxl":
        # imagecodecs' JPEG-XL is lossless only when asked; say it explicitly.
        return _portable("Jpegxl")(lossless=True, effort=1)
    if name == "jpegxl-lossy":
        return _portable("Jpegxl")(lossless=False, level=95, effort=1)
    if name == "jpeg2k":
        # Diffusion Policy's real-robot datasets use JPEG2000 at level 50 (lossy).
        return _portable("Jpeg2k")(level=50)
    raise ValueError(f"unknown codec {name!r}; choose one of {IMAGE_CODECS}")


# Codec parameters that today's imagecodecs writes into a codec config but that Diffusion
# Policy's own codec classes (diffusion_policy.codecs.imagecodecs_numcodecs, a 2022 copy of
# imagecodecs.numcodecs, used with zarr-python 2) do not accept: zarr calls Codec(**config),
# so one unknown key makes the whole array unreadable there ("Jpeg2k.__init__() got an
# unexpected keyword argument 'planar'"). Each is left out of the config only while it holds
# the value both classes default to, so the bytes written are the same and both read them.
# DP's Jpeg2k takes level, codecformat, colorspace, tile, reversible, bitspersample,
# resolutions, numthreads, verbose; its JpegXl takes level, effort, distance, lossless,
# decodingspeed, photometric, planar, usecontainer, index, keeporientation, numthreads.
PORTABLE_OMIT: dict[str, dict[str, object]] = {
    "Jpeg2k": {"planar": None, "mct": True, "squeeze": None},
    "Jpegxl": {"bitspersample": None, "squeeze": None},
}
_PORTABLE_CLASSES: dict[str, type] = {}


def _portable_get_config(self) -> dict:
    cfg = super(type(self), self).get_config()
    for key, default in PORTABLE_OMIT[type(self).__name__.removeprefix("Portable")].items():
        value = cfg.pop(key, default)
        if value != default:
            raise ValueError(
                f"codec {self.codec_id}: {key}={value!r} cannot be written portably (Diffusion Policy's "
                f"codec class does not accept {key!r}); leave it at {default!r}"
            )
    return cfg


def _portable(cls_name: str) -> type:
    """imagecodecs' codec class whose ``get_config()`` (what zarr writes into the array metadata)
    leaves out the parameters in ``PORTABLE_OMIT``, so readers with Diffusion Policy's codec
    registration open the array too. Same codec id; reading needs no special class."""
    cls = _PORTABLE_CLASSES.get(cls_name)
    if cls is None:
        import imagecodecs.numcodecs as inc

        base = getattr(inc, cls_name)
        cls = type(f"Portable{cls_name}", (base,), {"get_config": _portable_get_config})
        cls.__module__ = __name__  # picklable: found again through this module's __getattr__
        _PORTABLE_CLASSES[cls_name] = cls
    return cls


def portable_config(config: dict) -> dict:
    """A codec config (``{"id": "imagecodecs_jpeg2k", ...}``) without the parameters Diffusion
    Policy's codec classes reject, when they hold their defaults; other configs unchanged. Used
    to rewrite the metadata of arrays written before the store wrote portable configs."""
    for cls_name, omit in PORTABLE_OMIT.items():
        if config.get("id") == f"imagecodecs_{cls_name.lower()}":
            return {k: v for k, v in config.items() if not (k in omit and v == omit[k])}
    return dict(config)


_IMAGE_CODEC_CLASSES: dict[str, type] = {}


def __getattr__(name: str):
    # Unpickling looks the codec classes up here, possibly before anything registered them.
    # Dunder probes (the import system asks for __path__) must not load zarr.
    if not name.startswith("__"):
        register_codecs()
    if name in _IMAGE_CODEC_CLASSES:
        return _IMAGE_CODEC_CLASSES[name]
    if name.startswith("Portable") and name.removeprefix("Portable") in PORTABLE_OMIT:
        return _portable(name.removeprefix("Portable"))
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
    # zarr rebuilds a format-2 compressor from the registry before writing its config: register
    # the portable classes under the same ids so the configs written stay readable by Diffusion
    # Policy's codec classes. They inherit imagecodecs' __init__, so old, longer configs still load.
    from numcodecs.registry import register_codec as register_numcodec

    for cls_name in PORTABLE_OMIT:
        register_numcodec(_portable(cls_name))
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
