"""Diffusion Policy's read path, copied for a test: run with zarr-python 2 on PYTHONPATH.

    python tests/dp_reader.py STORE.zarr OUT.npz {dp|imagecodecs}

``dp``: the codec classes and ``register_codecs`` of
``diffusion_policy/codecs/imagecodecs_numcodecs.py`` (real-stanford/diffusion_policy, the
2022 copy of imagecodecs.numcodecs that DP and UMI ship), trimmed to the codecs our stores
write (Jpeg2k, JpegXl) with their constructors' exact signatures: zarr-python 2 builds a
compressor as ``cls(**config)``, so a config key the class does not take makes the array
unreadable. ``imagecodecs``: ``imagecodecs.numcodecs.register_codecs()`` instead.

Then it opens the store as DP does (``ReplayBuffer.create_from_path`` and
``ReplayBuffer.copy_from_path`` into numpy) and saves every array, decoded, to OUT.npz
(no pickle), plus ``__episode_ends``. Prints one JSON line: zarr version, arrays, codec ids.
"""

from __future__ import annotations

import json
import os
import sys

import imagecodecs
import numcodecs
import numpy
import zarr
from numcodecs.abc import Codec
from numcodecs.registry import get_codec, register_codec

# ----------------------------------------------------------------------------------------
# diffusion_policy/codecs/imagecodecs_numcodecs.py (BSD-3-Clause, Christoph Gohlke), trimmed


def protective_squeeze(x: numpy.ndarray):
    """
    Squeeze dim only if it's not the last dim.
    Image dim expected to be *, H, W, C
    """
    img_shape = x.shape[-3:]
    if len(x.shape) > 3:
        n_imgs = numpy.prod(x.shape[:-3])
        if n_imgs > 1:
            img_shape = (-1,) + img_shape
    return x.reshape(img_shape)


class Jpeg2k(Codec):
    """JPEG 2000 codec for numcodecs."""

    codec_id = "imagecodecs_jpeg2k"

    def __init__(
        self,
        level=None,
        codecformat=None,
        colorspace=None,
        tile=None,
        reversible=None,
        bitspersample=None,
        resolutions=None,
        numthreads=None,
        verbose=0,
    ):
        self.level = level
        self.codecformat = codecformat
        self.colorspace = colorspace
        self.tile = None if tile is None else tuple(tile)
        self.reversible = reversible
        self.bitspersample = bitspersample
        self.resolutions = resolutions
        self.numthreads = numthreads
        self.verbose = verbose

    def encode(self, buf):
        buf = protective_squeeze(numpy.asarray(buf))
        return imagecodecs.jpeg2k_encode(
            buf,
            level=self.level,
            codecformat=self.codecformat,
            colorspace=self.colorspace,
            tile=self.tile,
            reversible=self.reversible,
            bitspersample=self.bitspersample,
            resolutions=self.resolutions,
            numthreads=self.numthreads,
            verbose=self.verbose,
        )

    def decode(self, buf, out=None):
        return imagecodecs.jpeg2k_decode(buf, verbose=self.verbose, numthreads=self.numthreads, out=out)


class JpegXl(Codec):
    """JPEG XL codec for numcodecs."""

    codec_id = "imagecodecs_jpegxl"

    def __init__(
        self,
        # encode
        level=None,
        effort=None,
        distance=None,
        lossless=None,
        decodingspeed=None,
        photometric=None,
        planar=None,
        usecontainer=None,
        # decode
        index=None,
        keeporientation=None,
        # both
        numthreads=None,
    ):
        self.level = level
        self.effort = effort
        self.distance = distance
        self.lossless = bool(lossless)
        self.decodingspeed = decodingspeed
        self.photometric = photometric
        self.planar = planar
        self.usecontainer = usecontainer
        self.index = index
        self.keeporientation = keeporientation
        self.numthreads = numthreads

    def encode(self, buf):
        buf = protective_squeeze(numpy.asarray(buf))
        return imagecodecs.jpegxl_encode(
            buf,
            level=self.level,
            effort=self.effort,
            distance=self.distance,
            lossless=self.lossless,
            decodingspeed=self.decodingspeed,
            photometric=self.photometric,
            planar=self.planar,
            usecontainer=self.usecontainer,
            numthreads=self.numthreads,
        )

    def decode(self, buf, out=None):
        return imagecodecs.jpegxl_decode(
            buf,
            index=self.index,
            keeporientation=self.keeporientation,
            numthreads=self.numthreads,
            out=out,
        )


def register_codecs(codecs=None, force=False, verbose=True):
    """Register codecs in this module with numcodecs."""
    for name, cls in list(globals().items()):
        if not hasattr(cls, "codec_id") or name == "Codec":
            continue
        if codecs is not None and cls.codec_id not in codecs:
            continue
        try:
            try:
                get_codec({"id": cls.codec_id})
            except TypeError:
                # registered, but failed
                pass
        except ValueError:
            # not registered yet
            pass
        else:
            if not force:
                continue
        register_codec(cls)


# ----------------------------------------------------------------------------------------
# diffusion_policy/common/replay_buffer.py, the read path


class ReplayBuffer:
    def __init__(self, root):
        assert "data" in root
        assert "meta" in root
        assert "episode_ends" in root["meta"]
        for _key, value in root["data"].items():
            assert value.shape[0] == root["meta"]["episode_ends"][-1]
        self.root = root

    @classmethod
    def create_from_path(cls, zarr_path, mode="r"):
        group = zarr.open(os.path.expanduser(zarr_path), mode)
        return cls(root=group)

    @classmethod
    def copy_from_store(cls, src_store, keys=None):
        """Load to memory (the numpy backend)."""
        src_root = zarr.group(src_store)
        meta = dict()
        for key, value in src_root["meta"].items():
            if isinstance(value, zarr.Group):
                continue
            if len(value.shape) == 0:
                meta[key] = numpy.array(value)
            else:
                meta[key] = value[:]
        if keys is None:
            keys = src_root["data"].keys()
        data = dict()
        for key in keys:
            data[key] = src_root["data"][key][:]
        return cls(root={"meta": meta, "data": data})

    @classmethod
    def copy_from_path(cls, zarr_path, keys=None):
        return cls.copy_from_store(src_store=zarr.DirectoryStore(os.path.expanduser(zarr_path)), keys=keys)

    @property
    def episode_ends(self):
        return self.root["meta"]["episode_ends"]

    def keys(self):
        return self.root["data"].keys()

    def get_episode(self, idx):
        ends = self.episode_ends[:]
        start = 0 if idx == 0 else int(ends[idx - 1])
        return {k: v[start : int(ends[idx])] for k, v in self.root["data"].items()}


# ----------------------------------------------------------------------------------------


def main() -> int:
    path, out, registration = sys.argv[1:4]
    if registration == "dp":
        register_codecs()
    elif registration == "imagecodecs":
        import imagecodecs.numcodecs

        imagecodecs.numcodecs.register_codecs()
    else:
        raise SystemExit(f"registration must be dp or imagecodecs, got {registration!r}")
    lazy = ReplayBuffer.create_from_path(path, mode="r")
    codecs = {k: (a.compressor.codec_id if a.compressor else None) for k, a in lazy.root["data"].items()}
    classes = {k: type(a.compressor).__module__ for k, a in lazy.root["data"].items() if a.compressor}
    first = lazy.get_episode(0)  # on-disk arrays, decoded chunk by chunk
    mem = ReplayBuffer.copy_from_path(path)
    arrays = {k: numpy.asarray(v) for k, v in mem.root["data"].items()}
    for k, v in first.items():
        assert numpy.array_equal(v, arrays[k][: len(v)]), k
    arrays["__episode_ends"] = numpy.asarray(mem.episode_ends)
    numpy.savez(out, **arrays)
    print(
        json.dumps(
            {
                "zarr": zarr.__version__,
                "numcodecs": numcodecs.__version__,
                "arrays": sorted(mem.keys()),
                "codecs": codecs,
                "codec_modules": classes,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
