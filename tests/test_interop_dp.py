"""Diffusion Policy drop-in: format-2 stores open with DP's own codec classes under zarr-python 2.

zarr-python 2 cannot live in the project's environment (zarr 3), so it is installed once into
a cache folder (``pip install --target``, no dependencies: numpy and imagecodecs come from the
venv) and ``tests/dp_reader.py`` (DP's codec classes and ReplayBuffer read path, copied) runs in
a subprocess with that folder first on ``PYTHONPATH``. The test skips only when that install
cannot be done (no package index).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robot_policy.data import EpisodeStore, KeySpec
from robot_policy.data.codecs import portable_config

HERE = Path(__file__).resolve().parent
READER = HERE / "dp_reader.py"
ZARR2_REQS = ["zarr>=2.16,<3", "numcodecs>=0.12,<0.16", "asciitree", "fasteners", "deprecated", "wrapt"]


@pytest.fixture(scope="session")
def zarr2_path() -> str:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robot_policy_tests" / "zarr2"
    probe = [sys.executable, "-c", "import zarr, numcodecs; assert zarr.__version__.startswith('2.')"]
    env = {**os.environ, "PYTHONPATH": str(cache)}
    if subprocess.run(probe, env=env, capture_output=True).returncode != 0:
        cache.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--target", str(cache)]
            + ZARR2_REQS,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if r.returncode != 0 or subprocess.run(probe, env=env, capture_output=True).returncode != 0:
            pytest.skip(f"cannot install zarr-python 2 into {cache}: {r.stderr[-500:]}")
    return str(cache)


def dp_read(zarr2: str, store: Path, out: Path, registration: str) -> tuple[dict, dict]:
    r = subprocess.run(
        [sys.executable, str(READER), str(store), str(out), registration],
        env={**os.environ, "PYTHONPATH": zarr2},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if r.returncode != 0:
        raise AssertionError(f"DP reader ({registration}) failed on {store}:\n{r.stderr[-3000:]}")
    info = json.loads(r.stdout.strip().splitlines()[-1])
    with np.load(out, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return info, arrays


def make_store(path: Path, codec: str, zarr_format: int = 2) -> EpisodeStore:
    rng = np.random.default_rng(0)
    schema = {
        "agentview_rgb": KeySpec("uint8", (24, 32, 3)),
        "wrist_rgb": KeySpec("uint8", (16, 16, 3), codec="blosc"),
        "joint_pos": KeySpec("float32", (7,)),
        "action": KeySpec("float32", (8,)),
        "valid": KeySpec("bool", (2,), names=["/joint_states", "/agentview/color/image_raw"]),
    }
    store = EpisodeStore.create(path, schema, fps=10.0, zarr_format=zarr_format, image_codec=codec)
    for n in (5, 7):
        # smooth images: lossy codecs keep them close, so a decode of garbage would show
        yy, xx = np.mgrid[0:24, 0:32]
        base = ((xx * 8 + yy * 4) % 256).astype(np.uint8)
        img = np.stack([np.stack([base, base[::-1], 255 - base], -1)] * n)
        store.add_episode(
            {
                "agentview_rgb": img,
                "wrist_rgb": rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8),
                "joint_pos": rng.normal(size=(n, 7)).astype(np.float32),
                "action": rng.normal(size=(n, 8)).astype(np.float32),
                "valid": np.ones((n, 2), dtype=bool),
            },
            meta={"success": True},
        )
    store.close()
    return EpisodeStore.open(path)


@pytest.mark.parametrize("codec", ["jpeg2k", "jpegxl", "jpegxl-lossy", "blosc"])
def test_format2_store_opens_with_dp_and_imagecodecs_registration(zarr2_path, tmp_path, codec):
    store = make_store(tmp_path / "s.zarr", codec)
    ours = {k: store.array(k)[:] for k in store.keys}
    for registration in ("dp", "imagecodecs"):
        info, arrays = dp_read(zarr2_path, store.path, tmp_path / f"{registration}.npz", registration)
        assert info["zarr"].startswith("2.")
        assert sorted(info["arrays"]) == sorted(store.keys)
        np.testing.assert_array_equal(arrays["__episode_ends"], store.episode_ends)
        for k in store.keys:
            # the same decoder library underneath: identical pixels, every key
            np.testing.assert_array_equal(arrays[k], ours[k], err_msg=f"{codec} {registration} {k}")
        if registration == "dp" and codec != "blosc":
            assert info["codec_modules"]["agentview_rgb"] == "__main__"  # DP's class decoded it
    if codec == "jpegxl":  # lossless: DP reads back exactly what was written
        assert ours["agentview_rgb"][:5].std() > 10


def test_converted_store_opens_with_dp(zarr2_path, tmp_path):
    """A recorded (format 3, JPEG-XL) store converted for DP with `dataset convert --zarr-format 2`."""
    from robot_policy.data.convert import convert_store

    src = make_store(tmp_path / "rec.zarr", "jpegxl", zarr_format=3)
    dst = convert_store(src.path, tmp_path / "dp.zarr", zarr_format=2, image_codec="jpeg2k")
    info, arrays = dp_read(zarr2_path, dst.path, tmp_path / "o.npz", "dp")
    assert info["codecs"]["agentview_rgb"] == "imagecodecs_jpeg2k"
    np.testing.assert_array_equal(arrays["joint_pos"], src.array("joint_pos")[:])


def _old_style(store: Path) -> None:
    """Give the image arrays the full imagecodecs configs older versions wrote."""
    for f in (store / "data").glob("*/.zarray"):
        meta = json.loads(f.read_text())
        comp = meta["compressor"]
        if comp and comp["id"] == "imagecodecs_jpeg2k":
            comp.update(planar=None, mct=True, squeeze=None)
        elif comp and comp["id"] == "imagecodecs_jpegxl":
            comp.update(bitspersample=None, squeeze=None)
        f.write_text(json.dumps(meta))


@pytest.mark.parametrize("codec", ["jpeg2k", "jpegxl"])
def test_old_store_fails_with_dp_until_fixed(zarr2_path, tmp_path, codec):
    """The reported failure, reproduced, and `dataset fix-codecs` repairing it in place."""
    from robot_policy.cli.main import main as cli
    from robot_policy.interop.dp import make_dp_compatible

    store = make_store(tmp_path / "old.zarr", codec)
    before = store.array("agentview_rgb")[:]
    _old_style(Path(store.path))
    with pytest.raises(AssertionError, match="unexpected keyword argument"):
        dp_read(zarr2_path, store.path, tmp_path / "x.npz", "dp")
    assert make_dp_compatible(store.path, dry_run=True) == ["agentview_rgb"]
    assert cli(["dataset", "fix-codecs", store.path]) == 0
    assert make_dp_compatible(store.path) == []  # idempotent
    _, arrays = dp_read(zarr2_path, store.path, tmp_path / "y.npz", "dp")
    np.testing.assert_array_equal(arrays["agentview_rgb"], before)
    np.testing.assert_array_equal(EpisodeStore.open(store.path).array("agentview_rgb")[:], before)


def test_portable_config_keeps_non_default_parameters():
    cfg = {"id": "imagecodecs_jpeg2k", "level": 50, "planar": None, "mct": False, "squeeze": None}
    assert portable_config(cfg) == {"id": "imagecodecs_jpeg2k", "level": 50, "mct": False}
    assert portable_config({"id": "blosc", "cname": "zstd"}) == {"id": "blosc", "cname": "zstd"}


def test_format3_configs_are_portable_too(tmp_path):
    store = make_store(tmp_path / "v3.zarr", "jpeg2k", zarr_format=3)
    meta = json.loads((Path(store.path) / "data" / "agentview_rgb" / "zarr.json").read_text())
    (codec,) = [c for c in meta["codecs"] if c["name"].startswith("numcodecs.")]
    assert not {"planar", "mct", "squeeze"} & set(codec["configuration"])
    assert store.get_episode(1)["agentview_rgb"].shape == (7, 24, 32, 3)
