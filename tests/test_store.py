"""Episode store: round trips, hand-made Diffusion Policy stores, discard, bad input, stats."""

from __future__ import annotations

import numcodecs
import numpy as np
import pytest
import zarr

import robot_policy.data.store as store_mod
import robot_policy.data.writer as writer_mod
from robot_policy.data import EpisodeStore, EpisodeValidationError, KeySpec, StoreError
from robot_policy.data.validate import validate_store

# Every dtype and per-frame shape kind the store supports.
KINDS = {
    "flag": KeySpec("bool", ()),
    "step": KeySpec("int64", ()),
    "i8": KeySpec("int8", (3,)),
    "i16": KeySpec("int16", (2,)),
    "i32": KeySpec("int32", (4,)),
    "u16_depth": KeySpec("uint16", (12, 16)),
    "u32": KeySpec("uint32", (2,)),
    "u64": KeySpec("uint64", ()),
    "f16": KeySpec("float16", (3,)),
    "joint_pos": KeySpec("float32", (7,), names=[f"j{i}" for i in range(7)], units="rad"),
    "matrix": KeySpec("float32", (3, 4)),
    "f64": KeySpec("float64", (2,)),
    "gray": KeySpec("uint8", (12, 16)),
    "rgb": KeySpec("uint8", (12, 16, 3)),
    "action": KeySpec("float32", (8,)),
}


def make_episode(schema: dict[str, KeySpec], T: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for k, s in schema.items():
        shape = (T, *s.shape)
        dt = np.dtype(s.dtype)
        if dt.kind == "b":
            out[k] = rng.random(shape) > 0.5
        elif dt.kind in "iu":
            info = np.iinfo(dt)
            out[k] = rng.integers(max(info.min, -1000), min(info.max, 60000), shape, dtype=dt, endpoint=True)
        else:
            out[k] = rng.normal(size=shape).astype(dt)
    if "step" in out:
        out["step"] = np.arange(T, dtype=np.int64) + 1000 * seed
    return out


def assert_episode_equal(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_round_trip_every_kind(tmp_path, zarr_format):
    path = tmp_path / "s.zarr"
    store = EpisodeStore.create(path, KINDS, fps=15.0, robot="bench_arm", zarr_format=zarr_format)
    eps = [make_episode(KINDS, T, seed) for seed, T in enumerate([5, 1, 9])]
    assert (
        store.add_episode(
            eps[0], meta={"success": True, "seed": 0, "randomization": {"mass": 1.25, "tex": "wood"}}
        )
        == 0
    )
    w = store.begin_episode(meta={"seed": 1})
    w.append({k: v[0] for k, v in eps[1].items()})
    w.update_meta({"success": False})
    assert w.commit() == 1
    w = store.begin_episode()
    w.extend({k: v[:4] for k, v in eps[2].items()})
    for t in range(4, 9):
        w.append({k: v[t] for k, v in eps[2].items()})
    assert w.commit() == 2

    ro = EpisodeStore.open(path, "r")
    assert ro.zarr_format == zarr_format
    assert (ro.num_episodes, ro.num_frames, ro.fps, ro.robot) == (3, 15, 15.0, "bench_arm")
    assert ro.episode_ends.dtype == np.int64 and ro.episode_ends.tolist() == [5, 6, 15]
    assert (
        ro.schema["joint_pos"].names == [f"j{i}" for i in range(7)] and ro.schema["joint_pos"].units == "rad"
    )
    assert {k: (s.dtype, s.shape) for k, s in ro.schema.items()} == {
        k: (s.dtype, s.shape) for k, s in KINDS.items()
    }
    for i, ep in enumerate(eps):
        assert_episode_equal(ro.get_episode(i), ep)
    assert ro.episode_meta(0) == {"success": True, "seed": 0, "randomization": {"mass": 1.25, "tex": "wood"}}
    assert ro.episodes_meta()[1] == {"seed": 1, "success": False}
    assert ro.episode_meta(-1) == {}
    # DP layout on disk, readable with plain zarr
    g = zarr.open_group(str(path), mode="r")
    assert g["meta/episode_ends"][:].tolist() == [5, 6, 15]
    assert g["data/rgb"].shape == (15, 12, 16, 3) and g["data/rgb"].chunks[0] == 1
    assert validate_store(path, deep=True).ok
    if zarr_format == 2:  # what zarr-python 2 (Diffusion Policy, UMI) reads
        import json

        rgb = json.loads((path / "data" / "rgb" / ".zarray").read_text())
        assert (
            rgb["chunks"] == [1, 12, 16, 3]
            and rgb["compressor"]["id"] == "imagecodecs_jpegxl"
            and rgb["dtype"] == "|u1"
        )
        ends = json.loads((path / "meta" / "episode_ends" / ".zarray").read_text())
        assert ends["dtype"] == "<i8" and ends["shape"] == [3]


@pytest.mark.parametrize(
    "codec,lossless", [("blosc", True), ("jpegxl", True), ("jpegxl-lossy", False), ("jpeg2k", False)]
)
def test_image_codecs(tmp_path, codec, lossless):
    # A smooth image (codecs are built for those): lossy codecs must stay close.
    yy, xx = np.mgrid[0:32, 0:48]
    base = np.stack([xx * 5, yy * 7, (xx + yy) * 3], -1).astype(np.uint8)
    frames = np.stack([np.roll(base, t, axis=1) for t in range(4)])
    schema = {"cam": KeySpec("uint8", (32, 48, 3)), "action": KeySpec("float32", (2,))}
    for fmt in (3, 2):
        path = tmp_path / f"{codec}{fmt}.zarr"
        s = EpisodeStore.create(path, schema, fps=10, zarr_format=fmt, image_codec=codec)
        s.add_episode({"cam": frames, "action": np.zeros((4, 2), np.float32)})
        got = EpisodeStore.open(path).get_episode(0)["cam"]
        assert EpisodeStore.open(path).schema["cam"].codec == codec
        if lossless:
            np.testing.assert_array_equal(got, frames)
        else:
            mse = np.mean((got.astype(float) - frames) ** 2)
            assert 10 * np.log10(255**2 / max(mse, 1e-9)) > 30, codec


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_hand_made_dp_store(tmp_path, zarr_format):
    """A store written by other tools: only data/<key> and meta/episode_ends, no attributes."""
    path = tmp_path / "dp.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    rng = np.random.default_rng(0)
    T = 30
    state = rng.normal(size=(T, 5)).astype(np.float32)
    img = rng.integers(0, 255, (T, 8, 8, 3), dtype=np.uint8)
    action = rng.normal(size=(T, 2)).astype(np.float32)
    comp = numcodecs.Blosc("lz4", 5) if zarr_format == 2 else None
    kw = {"compressors": comp} if comp is not None else {}
    for name, arr, chunks in (
        ("state", state, (7, 5)),
        ("img", img, (1, 8, 8, 3)),
        ("action", action, (100, 2)),
    ):
        a = root.create_array(f"data/{name}", shape=arr.shape, dtype=arr.dtype, chunks=chunks, **kw)
        a[:] = arr
    ends = root.create_array("meta/episode_ends", shape=(3,), dtype="int64", chunks=(1,), **kw)
    ends[:] = [10, 18, 30]

    s = EpisodeStore.open(path)
    assert (s.num_episodes, s.num_frames, s.fps, s.robot) == (3, 30, None, None)
    assert s.schema["img"].dtype == "uint8" and s.schema["img"].shape == (8, 8, 3)
    np.testing.assert_array_equal(s.get_episode(1)["state"], state[10:18])
    assert s.episodes_meta() == [{}, {}, {}]
    assert validate_store(path).ok

    from robot_policy.data import SequenceDataset

    ds = SequenceDataset(s, ["state", "img"], "action", n_obs_steps=2, horizon=4)
    assert len(ds) == 30
    np.testing.assert_array_equal(ds[10]["obs"]["img"], img[[10, 10]])

    # Appending keeps the other tool's chunks and codecs and stays DP-readable.
    a = EpisodeStore.open(path, "a")
    new = {"state": state[:4], "img": img[:4], "action": action[:4]}
    assert a.add_episode(new, meta={"operator": "x"}) == 3
    g = zarr.open_group(str(path), mode="r")
    assert g["meta/episode_ends"][:].tolist() == [10, 18, 30, 34]
    assert g["data/state"].chunks == (7, 5)
    np.testing.assert_array_equal(g["data/img"][30:34], img[:4])
    assert EpisodeStore.open(path).episode_meta(3) == {"operator": "x"}
    assert validate_store(path, deep=True).ok


def test_dp_per_episode_meta_arrays_are_read(tmp_path):
    path = tmp_path / "m.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.create_array("data/x", shape=(4, 1), dtype="float32", chunks=(4, 1))[:] = 0
    root.create_array("meta/episode_ends", shape=(2,), dtype="int64", chunks=(2,))[:] = [1, 4]
    root.create_array("meta/success", shape=(2,), dtype="bool", chunks=(2,))[:] = [True, False]
    assert EpisodeStore.open(path).episodes_meta() == [{"success": True}, {"success": False}]


def test_create_and_open_errors(tmp_path):
    schema = {"a": KeySpec("float32", (2,))}
    path = tmp_path / "s.zarr"
    EpisodeStore.create(path, schema, fps=10)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        EpisodeStore.create(path, schema, fps=10)
    s = EpisodeStore.create(path, schema, fps=10, overwrite=True)
    assert s.num_episodes == 0
    with pytest.raises(FileNotFoundError):
        EpisodeStore.open(tmp_path / "missing.zarr")
    ro = EpisodeStore.open(path, "r")
    with pytest.raises(StoreError, match="read-only"):
        ro.add_episode({"a": np.zeros((1, 2), np.float32)})
    with pytest.raises(ValueError, match="image key"):
        EpisodeStore.create(tmp_path / "b.zarr", {"a": KeySpec("float32", (2,), codec="jpegxl")}, fps=10)
    with pytest.raises(ValueError, match="fps"):
        EpisodeStore.create(tmp_path / "c.zarr", schema, fps=0)
    with pytest.raises(ValueError, match="names"):
        KeySpec("float32", (3,), names=["a", "b"])
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(StoreError, match="episode_ends"):
        EpisodeStore.open(tmp_path / "plain.zarr")
    with pytest.raises(StoreError, match="no data/ group"):
        EpisodeStore.open(tmp_path / "plain.zarr", "a")
    with pytest.raises(StoreError, match="close"):
        EpisodeStore.create(path, schema, fps=10, overwrite=True)  # `s` still holds it for writing
    s.close()
    EpisodeStore.create(path, schema, fps=10, overwrite=True)


SMALL = {
    "joint_pos": KeySpec("float32", (3,)),
    "cam": KeySpec("uint8", (4, 4, 3)),
    "action": KeySpec("float32", (2,)),
}


def small_episode(T: int, seed: int = 0) -> dict[str, np.ndarray]:
    return make_episode(SMALL, T, seed)


@pytest.mark.parametrize(
    "mutate,pattern",
    [
        (lambda e: e.pop("cam"), r"episode 1.*missing \['cam'\]"),
        (lambda e: e.__setitem__("extra", np.zeros((5, 1), np.float32)), r"episode 1.*unknown \['extra'\]"),
        (
            lambda e: e.__setitem__("joint_pos", np.zeros((5, 4), np.float32)),
            r"episode 1, key 'joint_pos': shape \(5, 4\), expected \(T, 3\)",
        ),
        (
            lambda e: e.__setitem__("joint_pos", np.zeros((5, 3), np.float64)),
            r"episode 1, key 'joint_pos': dtype float64.*float32",
        ),
        (lambda e: e.__setitem__("cam", np.zeros((5, 4, 4, 3), np.int16)), r"key 'cam': dtype int16.*uint8"),
        (
            lambda e: e["action"].__setitem__((3, 1), np.nan),
            r"episode 1, key 'action': non-finite value nan at frame 3, element \(1,\)",
        ),
        (
            lambda e: e["joint_pos"].__setitem__((0, 2), -np.inf),
            r"key 'joint_pos': non-finite value -inf at frame 0",
        ),
        (lambda e: e.__setitem__("action", [[0.0, 0.0]] * 5), r"key 'action': expected a numpy array"),
        (
            lambda e: e.__setitem__("action", np.zeros((4, 2), np.float32)),
            r"episode 1: keys have different numbers of frames",
        ),
    ],
)
def test_bad_input_rejected_before_any_write(tmp_path, mutate, pattern):
    s = EpisodeStore.create(tmp_path / "s.zarr", SMALL, fps=10)
    s.add_episode(small_episode(4))
    bad = small_episode(5, seed=1)
    mutate(bad)
    with pytest.raises(EpisodeValidationError, match=pattern):
        s.add_episode(bad)
    assert all(s.array(k).shape[0] == 4 for k in SMALL)
    assert s.num_episodes == 1 and validate_store(s.path).ok
    # Streaming path: a bad frame is rejected, the writer stays usable.
    w = s.begin_episode()
    w.append({k: v[0] for k, v in small_episode(1, seed=2).items()})
    frame = {k: v[0] for k, v in small_episode(1, seed=3).items()}
    frame["action"] = np.array([np.inf, 0], np.float32)
    with pytest.raises(
        EpisodeValidationError, match=r"episode 1, key 'action': non-finite value inf at frame 1"
    ):
        w.append(frame)
    frame["action"] = np.zeros(2, np.float32)
    w.append(frame)
    assert w.commit() == 1 and s.episode_lengths.tolist() == [4, 2]


def test_writer_misuse_and_bad_meta(tmp_path):
    s = EpisodeStore.create(tmp_path / "s.zarr", SMALL, fps=10)
    w = s.begin_episode()
    with pytest.raises(StoreError, match="another episode is open"):
        s.begin_episode()
    with pytest.raises(StoreError, match="no frames"):
        w.commit()
    w.discard()
    with pytest.raises(StoreError, match="already committed or discarded"):
        w.append({k: v[0] for k, v in small_episode(1).items()})
    with pytest.raises(EpisodeValidationError, match="metadata when"):
        s.add_episode(small_episode(2), meta={"when": object()})
    with pytest.raises(EpisodeValidationError, match="not finite"):
        s.begin_episode(meta={"score": float("nan")})
    assert s.num_episodes == 0 and all(s.array(k).shape[0] == 0 for k in SMALL)


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_discard_is_invisible_and_truncated(tmp_path, monkeypatch, zarr_format):
    monkeypatch.setattr(writer_mod, "FLUSH_BYTES", 64)  # frames reach disk mid-episode
    path = tmp_path / "s.zarr"
    s = EpisodeStore.create(path, SMALL, fps=10, zarr_format=zarr_format)
    first = small_episode(3, seed=0)
    s.add_episode(first, meta={"n": 0})
    w = s.begin_episode(meta={"n": "discarded"}, background=False)
    w.extend(small_episode(6, seed=1))
    assert s.array("cam").shape[0] > 3  # the partial episode is on disk ...
    assert EpisodeStore.open(path).num_episodes == 1  # ... but invisible to readers
    w.discard()
    assert all(s.array(k).shape[0] == 3 for k in SMALL)
    with s.begin_episode() as w2:  # leaving the block without commit discards too
        w2.extend(small_episode(2, seed=5))
    second = small_episode(4, seed=2)
    assert s.add_episode(second, meta={"n": 1}) == 1
    ro = EpisodeStore.open(path)
    assert ro.episode_ends.tolist() == [3, 7] and ro.episodes_meta() == [{"n": 0}, {"n": 1}]
    assert_episode_equal(ro.get_episode(1), second)
    rep = validate_store(path, deep=True)
    assert rep.ok and not rep.notes


def test_stats_computed_once_and_cached(tmp_path):
    path = tmp_path / "s.zarr"
    s = EpisodeStore.create(path, SMALL, fps=10)
    e0, e1 = small_episode(5, 0), small_episode(7, 1)
    s.add_episode(e0)
    s.add_episode(e1)
    st = s.stats()
    jp = np.concatenate([e0["joint_pos"], e1["joint_pos"]]).astype(np.float64)
    np.testing.assert_allclose(st["joint_pos"]["mean"], jp.mean(0), rtol=1e-5)
    np.testing.assert_allclose(st["joint_pos"]["std"], jp.std(0), rtol=1e-4)
    np.testing.assert_allclose(st["joint_pos"]["min"], jp.min(0))
    np.testing.assert_allclose(st["joint_pos"]["max"], jp.max(0))
    cam = np.concatenate([e0["cam"], e1["cam"]]).reshape(-1, 3)
    assert st["cam"]["mean"].shape == (3,)
    np.testing.assert_allclose(st["cam"]["max"], cam.max(0))
    np.testing.assert_allclose(st["cam"]["mean"], cam.mean(0), rtol=1e-6)
    np.testing.assert_allclose(st["cam"]["std"], cam.std(0), rtol=1e-5)
    cached = zarr.open_group(str(path), mode="r").attrs[store_mod.STATS_ATTR]
    assert set(cached["keys"]) == set(SMALL)
    # A read-only reader uses the cache instead of recomputing.
    cached["keys"]["action"]["mean"] = [123.0, 456.0]
    zarr.open_group(str(path), mode="r+").attrs[store_mod.STATS_ATTR] = cached
    assert EpisodeStore.open(path).stats(["action"])["action"]["mean"].tolist() == [123.0, 456.0]
    # New episodes invalidate it.
    s.add_episode(small_episode(2, 2))
    assert EpisodeStore.open(path, "a").stats(["action"])["action"]["mean"].tolist() != [123.0, 456.0]


def test_background_writes_land_in_order_and_errors_surface(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_mod, "FLUSH_BYTES", 100)  # many small background flushes
    s = EpisodeStore.create(tmp_path / "s.zarr", SMALL, fps=10)
    ep = small_episode(40, seed=4)
    w = s.begin_episode()
    for t in range(40):
        frame = {k: v[t].copy() for k, v in ep.items()}
        w.append(frame)
        frame["cam"][:] = 0  # the caller reusing its buffer must not change what was appended
    assert w.commit() == 0
    assert_episode_equal(EpisodeStore.open(s.path).get_episode(0), ep)

    def broken(arr, offset, parts):
        raise OSError("No space left on device")

    monkeypatch.setattr(writer_mod, "_write", broken)
    w = s.begin_episode()
    with pytest.raises(OSError, match="No space left"):
        for t in range(40):
            w.append({k: v[t] for k, v in ep.items()})
        w.commit()
    w.discard()
    assert s.num_episodes == 1 and EpisodeStore.open(s.path).num_episodes == 1


def test_one_writing_process_per_store(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "s.zarr"
    s = EpisodeStore.create(path, SMALL, fps=10)
    code = f"from robot_policy.data import EpisodeStore; EpisodeStore.open({str(path)!r}, 'a')"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode != 0 and "open for writing by another process" in p.stderr
    # Handles in one process share the lock; a second handle sees the first one's commits.
    other = EpisodeStore.open(path, "a")
    s.add_episode(small_episode(3, 0))
    assert other.add_episode(small_episode(2, 1)) == 1
    assert EpisodeStore.open(path).episode_lengths.tolist() == [3, 2]
    s.close()
    other.close()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_schema_objects_are_not_shared(tmp_path):
    schema = {"cam": KeySpec("uint8", (4, 4, 3)), "action": KeySpec("float32", (2,))}
    a = EpisodeStore.create(tmp_path / "a.zarr", schema, fps=10, image_codec="blosc")
    b = EpisodeStore.create(tmp_path / "b.zarr", schema, fps=10)
    assert schema["cam"].codec is None  # the caller's specs are left alone
    assert (a.schema["cam"].codec, b.schema["cam"].codec) == ("blosc", "jpegxl")
    a.schema["cam"].units = "changed"
    assert a.schema["cam"].units is None


def test_timestamp_stats_stay_exact(tmp_path):
    s = EpisodeStore.create(tmp_path / "t.zarr", {"t": KeySpec("float64", ())}, fps=30)
    t = 1.7e9 + np.arange(3000) / 30.0
    s.add_episode({"t": t})
    st = s.stats()["t"]
    assert abs(float(np.float64(st["std"])) - t.std()) / t.std() < 1e-3


def test_codec_names_and_layout_import_without_zarr():
    # The CLI lists codec names in --help; that must not cost a zarr (or torch) import.
    import subprocess
    import sys

    code = (
        "import sys; from robot_policy.data.codecs import IMAGE_CODECS; "
        "from robot_policy.data.layout import StoreError; "
        "print(sorted(m for m in ('zarr', 'torch', 'imagecodecs') if m in sys.modules))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stderr
