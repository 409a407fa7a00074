"""LeRobotDataset v3 export/import, checked by a reader written here against the format itself
(pyarrow + PyAV, nothing from robot_policy.interop), and optionally by lerobot's own loader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
av = pytest.importorskip("av")

from robot_policy.data import EpisodeStore, KeySpec  # noqa: E402

TOL = 1e-4  # LeRobot's tolerance_s
DEFAULTS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
QUANTS = ("q01", "q10", "q50", "q90", "q99")


def make_store(path: Path, lens=(12, 9, 15), h=24, w=32, fps=20.0, gray=False) -> EpisodeStore:
    rng = np.random.default_rng(0)
    schema = {
        "agentview_rgb": KeySpec("uint8", (h, w, 3)),
        "wrist_rgb": KeySpec("uint8", (h, w) if gray else (h, w, 3)),
        "joint_pos": KeySpec("float32", (7,), names=[f"panda_joint{i}" for i in range(1, 8)], units="rad"),
        "joint_vel": KeySpec("float32", (7,)),
        "gripper": KeySpec("float32", (1,)),
        "action": KeySpec("float32", (8,)),
        "valid": KeySpec("bool", (2,), names=["/joint_states", "/agentview/color/image_raw"]),
        "stamp": KeySpec("float64", ()),
        "object": KeySpec("float32", (2, 3)),
        "count": KeySpec("int32", (3,)),
    }
    store = EpisodeStore.create(path, schema, fps=fps, robot="sim_tabletop", attrs={"made_by": "test"})
    for e, n in enumerate(lens):
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack(
            [
                np.stack([(xx * 6 + i * 3) % 256, (yy * 5 + e * 20) % 256, ((xx + yy) * 2 + i) % 256], -1)
                for i in range(n)
            ]
        ).astype(np.uint8)
        valid = np.ones((n, 2), bool)
        valid[n // 2, 1] = False
        wrist = img[:, ::-1].copy()
        store.add_episode(
            {
                "agentview_rgb": img,
                "wrist_rgb": wrist[..., 0].copy() if gray else wrist,
                "joint_pos": rng.normal(size=(n, 7)).astype(np.float32),
                "joint_vel": rng.normal(size=(n, 7)).astype(np.float32),
                "gripper": rng.uniform(size=(n, 1)).astype(np.float32),
                "action": rng.normal(size=(n, 8)).astype(np.float32),
                "valid": valid,
                "stamp": 1.7e9 + np.arange(n) / fps + rng.uniform(0, 1e-3, n),
                "object": rng.normal(size=(n, 2, 3)).astype(np.float32),
                "count": rng.integers(-5, 5, (n, 3)).astype(np.int32),
            },
            meta={
                "success": e % 2 == 0,
                "seed": e,
                "operator": "ana",
                "randomization": {"cube_x": 0.1 * e, "light": [1, 2]},
                "gaps": [{"stream": "/agentview/color/image_raw", "frame": n // 2, "frames": 1}],
                **({"task": "lift the cube"} if e else {}),
            },
        )
    store.close()
    return EpisodeStore.open(path)


# ----------------------------------------------------------------------------------------------
# A reader of the published v3.0 layout, independent of robot_policy.interop.


def read_lerobot(root: Path) -> dict:
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    fps = info["fps"]
    feats = info["features"]
    for name, ft in feats.items():
        assert {"dtype", "shape", "names"} <= set(ft), name
        assert "/" not in name
    for d in DEFAULTS:
        assert feats[d]["shape"] == [1]
    videos = [k for k, ft in feats.items() if ft["dtype"] == "video"]
    for k in videos:
        assert feats[k]["names"] == ["height", "width", "channels"] and feats[k]["shape"][2] == 3
        assert feats[k]["info"]["video.pix_fmt"] == "yuv420p"
        assert feats[k]["info"]["video.codec"] in ("av1", "h264")

    tasks_t = pq.read_table(root / "meta/tasks.parquet")
    pandas_meta = json.loads(tasks_t.schema.metadata[b"pandas"])
    (index_col,) = pandas_meta["index_columns"]
    tasks = dict(zip(tasks_t.column("task_index").to_pylist(), tasks_t.column(index_col).to_pylist()))
    assert len(tasks) == info["total_tasks"]

    ep_files = sorted((root / "meta/episodes").glob("chunk-*/file-*.parquet"))
    eps = pa.concat_tables([pq.read_table(p) for p in ep_files]).to_pylist()
    assert [e["episode_index"] for e in eps] == list(range(info["total_episodes"]))

    data_files = sorted((root / "data").glob("chunk-*/file-*.parquet"))
    tables = {p: pq.read_table(p) for p in data_files}
    data = pa.concat_tables(tables.values())
    assert data.num_rows == info["total_frames"]
    assert data.column("index").to_pylist() == list(range(data.num_rows))
    cols = set(data.column_names)
    assert cols == {k for k, ft in feats.items() if ft["dtype"] != "video"}
    for name in cols:
        ft = feats[name]
        t = data.schema.field(name).type
        if ft["shape"] == [1]:
            assert not pa.types.is_list(t) and not pa.types.is_fixed_size_list(t), name
        else:
            assert t.list_size == int(np.prod(ft["shape"])), name

    out = {"info": info, "tasks": tasks, "episodes": eps, "frames": {}, "files_per_episode": {}}
    decoded: dict[Path, list[tuple[float, np.ndarray]]] = {}
    for e in eps:
        i = e["episode_index"]
        path = root / info["data_path"].format(
            chunk_index=e["data/chunk_index"], file_index=e["data/file_index"]
        )
        t = tables[path]
        mask = np.asarray(t.column("episode_index").to_numpy()) == i
        rows = t.filter(pa.array(mask))
        n = rows.num_rows
        assert n == e["length"] == e["dataset_to_index"] - e["dataset_from_index"]
        assert rows.column("index").to_pylist() == list(range(e["dataset_from_index"], e["dataset_to_index"]))
        fi = rows.column("frame_index").to_numpy()
        ts = rows.column("timestamp").to_numpy().astype(np.float64)
        assert list(fi) == list(range(n))
        assert np.abs(ts - fi / fps).max() <= TOL  # LeRobot's timestamp check
        assert (
            set(rows.column("task_index").to_pylist()) <= set(tasks)
            and tasks[rows.column("task_index")[0].as_py()] in e["tasks"]
        )
        frame = {}
        for name in cols:
            c = rows.column(name).combine_chunks()
            frame[name] = (
                c.flatten().to_numpy(zero_copy_only=False).reshape(n, -1)
                if pa.types.is_fixed_size_list(c.type)
                else c.to_numpy(zero_copy_only=False)
            )
        for k in videos:
            vpath = root / info["video_path"].format(
                video_key=k, chunk_index=e[f"videos/{k}/chunk_index"], file_index=e[f"videos/{k}/file_index"]
            )
            if vpath not in decoded:
                with av.open(str(vpath)) as c:
                    s = c.streams.video[0]
                    assert s.codec_context.name in ("libdav1d", "h264", "av1")
                    decoded[vpath] = [
                        (float(f.pts * f.time_base), f.to_ndarray(format="rgb24")) for f in c.decode(s)
                    ]
            start = e[f"videos/{k}/from_timestamp"]
            assert abs(e[f"videos/{k}/to_timestamp"] - start - n / fps) <= TOL
            got = []
            for want in start + ts:
                dist = [abs(t - want) for t, _ in decoded[vpath]]
                j = int(np.argmin(dist))
                assert dist[j] < TOL, f"{k} episode {i}: no frame within {TOL} s of {want}"
                got.append(decoded[vpath][j][1])
            frame[k] = np.stack(got)
        out["frames"][i] = frame
        out["files_per_episode"][i] = (path, *(e[f"videos/{k}/file_index"] for k in videos))

    stats = json.loads((root / "meta/stats.json").read_text())
    for name, ft in feats.items():
        if ft["dtype"] == "string":
            continue
        assert set(stats[name]) == {"min", "max", "mean", "std", "count", *QUANTS}, name
        if ft["dtype"] == "video":
            assert np.asarray(stats[name]["mean"]).shape == (3, 1, 1)
            assert 0 <= np.min(stats[name]["min"]) and np.max(stats[name]["max"]) <= 1
        else:
            assert np.asarray(stats[name]["mean"]).shape == (int(np.prod(ft["shape"])),)
            assert stats[name]["count"] == [info["total_frames"]]
            q = np.asarray([stats[name][k] for k in QUANTS])
            assert np.all(np.diff(q, axis=0) >= -1e-9), name  # quantiles are ordered
    out["stats"] = stats
    return out


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def check_against_store(lr: dict, store: EpisodeStore, min_psnr: float = 30.0) -> dict[str, float]:
    """Low-dim values exact, images within the codec's loss; returns PSNR per camera."""
    psnrs: dict[str, list] = {}
    for ep in range(store.num_episodes):
        src = store.get_episode(ep)
        f = lr["frames"][ep]
        n = len(src["action"])
        np.testing.assert_array_equal(
            f["observation.state"], np.concatenate([src["joint_pos"], src["gripper"]], 1)
        )
        np.testing.assert_array_equal(f["observation.joint_vel"], src["joint_vel"])
        np.testing.assert_array_equal(f["action"], src["action"])
        np.testing.assert_array_equal(f["valid"], src["valid"])
        np.testing.assert_array_equal(f["observation.stamp"], src["stamp"])
        np.testing.assert_array_equal(f["observation.object"], src["object"].reshape(n, 6))
        np.testing.assert_array_equal(f["observation.count"], src["count"])
        assert f["observation.state"].dtype == np.float32 and f["valid"].dtype == bool
        for cam in ("agentview", "wrist"):
            ref = src[f"{cam}_rgb"]
            ref = np.repeat(ref[..., None], 3, -1) if ref.ndim == 3 else ref
            psnrs.setdefault(cam, []).append(psnr(f[f"observation.images.{cam}"], ref))
    out = {k: float(np.mean(v)) for k, v in psnrs.items()}
    assert all(v > min_psnr for v in out.values()), out
    return out


def check_roundtrip(src: EpisodeStore, back: EpisodeStore, lr: dict) -> None:
    assert back.schema == src.schema
    assert back.episodes_meta() == src.episodes_meta()
    assert list(back.episode_ends) == list(src.episode_ends)
    assert back.fps == src.fps and back.robot == src.robot
    assert back.attrs["made_by"] == "test"
    for k in src.keys:
        a, b = src.array(k)[:], back.array(k)[:]
        assert a.dtype == b.dtype and a.shape == b.shape, k
        if k.endswith("_rgb"):
            # the imported pixels are exactly the decoded video frames
            cam = k.removesuffix("_rgb")
            dec = np.concatenate(
                [lr["frames"][e][f"observation.images.{cam}"] for e in range(src.num_episodes)]
            )
            np.testing.assert_array_equal(b, dec[..., 0] if b.ndim == 3 else dec)
        else:
            np.testing.assert_array_equal(a, b, err_msg=k)


# ----------------------------------------------------------------------------------------------


def test_export_is_valid_v3_and_round_trips(tmp_path):
    from robot_policy.interop.lerobot import export_lerobot, import_lerobot

    src = make_store(tmp_path / "src.zarr")
    rep = export_lerobot(src.path, tmp_path / "lr", task="pick")
    lr = read_lerobot(tmp_path / "lr")
    # several episodes per file, one file each for data and per camera
    assert len({v for v in lr["files_per_episode"].values()}) == 1
    info = lr["info"]
    assert info["fps"] == 20 and info["total_episodes"] == 3 and info["total_frames"] == 36
    assert info["features"]["observation.state"]["names"][:2] == ["panda_joint1", "panda_joint2"]
    assert info["features"]["observation.state"]["names"][-1] == "gripper"
    assert lr["tasks"] == {0: "pick", 1: "lift the cube"}
    assert [e["tasks"] for e in lr["episodes"]] == [["pick"], ["lift the cube"], ["lift the cube"]]
    # per-episode metadata where the format has room: typed columns of the episodes table
    assert [e["success"] for e in lr["episodes"]] == [True, False, True]
    assert [e["operator"] for e in lr["episodes"]] == ["ana"] * 3
    ps = check_against_store(lr, src)
    assert rep.psnr and all(abs(rep.psnr[f"observation.images.{k}"] - v) < 0.5 for k, v in ps.items())
    assert rep.frames == 36 and rep.bytes["videos"] > 0

    imp = import_lerobot(tmp_path / "lr", tmp_path / "back.zarr")
    assert imp.episodes == 3 and imp.frames == 36
    check_roundtrip(src, EpisodeStore.open(tmp_path / "back.zarr"), lr)


def test_file_rollover_h264_gray_and_quantiles(tmp_path):
    from robot_policy.interop.lerobot import export_lerobot, import_lerobot

    src = make_store(tmp_path / "src.zarr", lens=(10, 11, 12, 13), gray=True)
    export_lerobot(src.path, tmp_path / "lr", vcodec="h264", crf=18, data_file_mb=1e-6, video_file_mb=1e-6)
    lr = read_lerobot(tmp_path / "lr")
    assert len(list((tmp_path / "lr/data").glob("chunk-000/file-*.parquet"))) == 4  # one per episode
    assert len(list((tmp_path / "lr/videos/observation.images.wrist").glob("chunk-000/*.mp4"))) >= 2
    assert lr["info"]["features"]["observation.images.wrist"]["info"]["video.codec"] == "h264"
    check_against_store(lr, src, min_psnr=35.0)
    # stats: LeRobot's histogram quantiles are within one bin of the exact ones per episode
    st = lr["stats"]["action"]
    allv = src.array("action")[:].astype(np.float64)
    assert st["count"] == [len(allv)]
    np.testing.assert_allclose(st["min"], allv.min(0), rtol=1e-6)
    np.testing.assert_allclose(st["mean"], allv.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(st["std"], allv.std(0), rtol=1e-4)
    import_lerobot(tmp_path / "lr", tmp_path / "back.zarr", zarr_format=2, image_codec="blosc")
    back = EpisodeStore.open(tmp_path / "back.zarr")
    assert back.zarr_format == 2 and back.schema["wrist_rgb"].shape == (24, 32)
    for k in ("action", "joint_pos", "valid", "stamp", "object"):
        np.testing.assert_array_equal(back.array(k)[:], src.array(k)[:])


def test_import_of_a_dataset_not_made_by_us(tmp_path):
    """Strip our mapping and JSON column: the import falls back to LeRobot's conventions."""
    from robot_policy.interop.lerobot import export_lerobot, import_lerobot

    src = make_store(tmp_path / "src.zarr", lens=(8, 6))
    export_lerobot(src.path, tmp_path / "lr", state_keys=[])
    info_path = tmp_path / "lr/meta/info.json"
    info = json.loads(info_path.read_text())
    del info["robot_policy"]
    info["features"]["observation.joint_pos"]["names"] = {"motors": [f"m{i}" for i in range(7)]}
    info_path.write_text(json.dumps(info))
    ep_path = tmp_path / "lr/meta/episodes/chunk-000/file-000.parquet"
    t = pq.read_table(ep_path)
    pq.write_table(t.drop(["robot_policy/meta_json"]), ep_path)

    import_lerobot(tmp_path / "lr", tmp_path / "back.zarr")
    back = EpisodeStore.open(tmp_path / "back.zarr")
    assert set(back.keys) == {
        "agentview_rgb",
        "wrist_rgb",
        "joint_pos",
        "joint_vel",
        "gripper",
        "action",
        "valid",
        "stamp",
        "object",
        "count",
    }
    assert back.schema["joint_pos"].names == [f"m{i}" for i in range(7)]
    assert back.schema["object"].shape == (6,)  # flattened by the export, nothing says otherwise
    np.testing.assert_array_equal(back.array("joint_pos")[:], src.array("joint_pos")[:])
    np.testing.assert_array_equal(back.array("gripper")[:], src.array("gripper")[:])
    m = back.episodes_meta()
    assert [x["task"] for x in m] == ["unspecified task", "lift the cube"]
    assert [x["success"] for x in m] == [True, False] and m[1]["seed"] == 1 and m[0]["operator"] == "ana"


def test_clear_errors(tmp_path):
    from robot_policy.interop.lerobot import export_lerobot, import_lerobot

    odd = EpisodeStore.create(tmp_path / "odd.zarr", {"cam_rgb": KeySpec("uint8", (15, 16, 3))}, fps=10)
    odd.add_episode({"cam_rgb": np.zeros((3, 15, 16, 3), np.uint8)})
    odd.close()
    with pytest.raises(ValueError, match="cam_rgb.*odd"):
        export_lerobot(tmp_path / "odd.zarr", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    src = make_store(tmp_path / "src.zarr", lens=(4,))
    with pytest.raises(ValueError, match="state-keys.*'nope'"):
        export_lerobot(src.path, tmp_path / "y", state_keys=["nope"])
    export_lerobot(src.path, tmp_path / "lr", check_psnr=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_lerobot(src.path, tmp_path / "lr")
    info_path = tmp_path / "lr/meta/info.json"
    info = json.loads(info_path.read_text())
    info["codebase_version"] = "v2.1"
    info_path.write_text(json.dumps(info))
    with pytest.raises(ValueError, match="v2.1.*convert_dataset_v21_to_v30"):
        import_lerobot(tmp_path / "lr", tmp_path / "z.zarr")
    info["codebase_version"] = "v3.0"
    info_path.write_text(json.dumps(info))
    # a video that lost its last frames: the import names the feature, episode and time
    vdir = tmp_path / "lr/videos/observation.images.agentview/chunk-000"
    short = vdir / "short.mp4"
    with av.open(str(short), "w") as o:  # 2 frames where 4 are expected
        st = o.add_stream("h264", rate=20)
        st.width, st.height, st.pix_fmt = 32, 24, "yuv420p"
        for i in range(2):
            fr = av.VideoFrame.from_ndarray(np.zeros((24, 32, 3), np.uint8), format="rgb24")
            fr.pts = i
            for pkt in st.encode(fr):
                o.mux(pkt)
        for pkt in st.encode():
            o.mux(pkt)
    os.replace(short, vdir / "file-000.mp4")
    with pytest.raises(ValueError, match="observation.images.agentview.*episode 0"):
        import_lerobot(tmp_path / "lr", tmp_path / "z.zarr")
    assert not (tmp_path / "z.zarr").exists()


def test_cli_export_import(tmp_path, capsys):
    from robot_policy.cli.main import main

    src = make_store(tmp_path / "src.zarr", lens=(5, 6))
    assert main(["dataset", "export-lerobot", src.path, str(tmp_path / "lr"), "--vcodec", "h264"]) == 0
    out = capsys.readouterr().out
    assert "frames/s" in out and "PSNR" in out and "MB" in out
    assert main(["dataset", "import-lerobot", str(tmp_path / "lr"), str(tmp_path / "b.zarr")]) == 0
    assert "2 episodes, 11 frames" in capsys.readouterr().out
    assert main(["dataset", "import-lerobot", str(tmp_path / "nothing"), str(tmp_path / "c.zarr")]) == 1
    assert "no meta/info.json" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# lerobot's own loader (0.4.4, the last release for Python 3.11), installed into a cache folder
# beside the venv as ../shared/ENVIRONMENT.md describes; skipped when that cannot be done.

LEROBOT_REQS = [
    "lerobot==0.4.4",
    "torchvision==0.28.0",
    "torchcodec==0.13.0",
    "datasets>=4,<5",
    "huggingface_hub>=0.34.2,<0.36",
    "pandas",
    "jsonlines",
    "draccus==0.10.0",
    "einops",
    "deepdiff",
    "termcolor",
    "fsspec<=2025.9.0",
    "dill",
    "multiprocess",
    "xxhash",
    "mergedeep",
    "pyyaml-include",
    "toml",
    "typing-inspect",
    "mypy-extensions",
    "orderly-set",
    "hf-xet",
    "tzdata",
    "pytz",
    "httpx",
    "accelerate",
]
LEROBOT_LOADER = r"""
import json, sys, numpy as np, torch
lib = torch.library.Library("torchvision", "DEF")  # torchvision +cu wheels with a CPU torch
lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
from lerobot.datasets.lerobot_dataset import LeRobotDataset
root, out = sys.argv[1:3]
ds = LeRobotDataset("local/export", root=root, video_backend="torchcodec",
                    delta_timestamps={"action": [0.0, 0.05, 0.1], "observation.images.agentview": [-0.05, 0.0]})
arrays = {}
for k in ("observation.state", "action", "observation.images.agentview", "observation.images.wrist", "valid"):
    arrays[k] = np.stack([ds[i][k].numpy() for i in range(len(ds))])
arrays["task"] = np.array([ds[i]["task"] for i in range(len(ds))])
np.savez(out, **arrays)
print(json.dumps({"len": len(ds), "episodes": ds.num_episodes, "fps": ds.fps, "video_keys": ds.meta.video_keys,
                  "stats_keys": sorted(ds.meta.stats), "q99": "q99" in ds.meta.stats["action"]}))
"""


@pytest.fixture(scope="session")
def lerobot_path() -> str:
    cache = (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robot_policy_tests" / "lerobot044"
    )
    probe = [sys.executable, "-c", "import lerobot, datasets, torchcodec, pandas"]
    env = {**os.environ, "PYTHONPATH": str(cache)}
    if subprocess.run(probe, env=env, capture_output=True).returncode != 0:
        cache.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--upgrade",
                "--target",
                str(cache),
                *LEROBOT_REQS,
            ],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if r.returncode != 0 or subprocess.run(probe, env=env, capture_output=True).returncode != 0:
            pytest.skip(f"lerobot 0.4.4 cannot be installed into {cache}: {r.stderr[-400:]}")
    return str(cache)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_lerobot_own_loader_reads_the_export(tmp_path, lerobot_path):
    from robot_policy.interop.lerobot import export_lerobot

    src = make_store(tmp_path / "src.zarr", h=32, w=32)
    export_lerobot(src.path, tmp_path / "lr", task="pick")
    script = tmp_path / "load.py"
    script.write_text(LEROBOT_LOADER)
    r = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "lr"), str(tmp_path / "o.npz")],
        env={**os.environ, "PYTHONPATH": lerobot_path, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if r.returncode != 0 and ("libavutil" in r.stderr or "Could not load libtorchcodec" in r.stderr):
        pytest.skip(f"torchcodec cannot load FFmpeg here: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["len"] == 36 and info["episodes"] == 3 and info["fps"] == 20 and info["q99"]
    with np.load(tmp_path / "o.npz", allow_pickle=False) as z:
        state, action, cam, valid = (
            z["observation.state"],
            z["action"],
            z["observation.images.agentview"],
            z["valid"],
        )
        tasks = list(z["task"])
    all_state = np.concatenate([src.array("joint_pos")[:], src.array("gripper")[:]], 1)
    np.testing.assert_array_equal(state, all_state)
    np.testing.assert_array_equal(valid, src.array("valid")[:])
    # delta_timestamps [0, 1, 2] frames ahead, padded by repeating the episode's last frame
    ends = src.episode_ends
    idx = np.arange(36)
    ep_end = ends[np.searchsorted(ends, idx, side="right")]
    for j, d in enumerate((0, 1, 2)):
        np.testing.assert_array_equal(action[:, j], src.array("action")[:][np.minimum(idx + d, ep_end - 1)])
    # images: float CHW in [0, 1], the current frame is the last of the two requested
    ref = src.array("agentview_rgb")[:].transpose(0, 3, 1, 2).astype(np.float64) / 255
    assert psnr((cam[:, 1] * 255).round(), ref * 255) > 30
    assert tasks == ["pick"] * 12 + ["lift the cube"] * 24
