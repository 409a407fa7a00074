"""``robot-policy bench store``: episode-store write throughput, codecs, window sampling.

The stream is what a two-camera cell records: two 480x640 rgb cameras plus joint state,
joint velocities and the commanded action at 30 Hz. Frames are rendered with MuJoCo
(``robot_policy.bench._scene``) because compression figures on random noise mean nothing.
Rendering happens before the clock starts; only the store is timed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from robot_policy.console import add_command
from robot_policy.data.codecs import IMAGE_CODECS as CODECS  # the default first: windows/s use it


def register(sub) -> None:
    p = add_command(
        sub,
        "store",
        help="episode store: write throughput (two 480x640 cameras + joints at 30 Hz), codecs, windows/s",
        description="Streams rendered frames (two 480x640 rgb cameras + joints, 30 Hz) into an episode "
        "store frame by frame, as a recorder would, and reports frames/s, MB/s and the ratio to real "
        "time for each image codec; measures each codec's size ratio and decode time on rendered "
        "frames with and without simulated sensor noise; then samples training windows (2 obs "
        "steps, horizon 16) and reports windows/s. Saves JSON (default outputs/bench/store.json).",
        epilog="examples:\n  robot-policy bench store\n  robot-policy bench store --seconds 5 --codecs blosc",
    )
    p.add_argument(
        "--seconds", type=float, default=20.0, help="seconds of 30 Hz data written per codec (default 20)"
    )
    p.add_argument(
        "--codecs",
        default=",".join(CODECS),
        help=f"comma-separated image codecs to measure (default {','.join(CODECS)})",
    )
    p.add_argument(
        "--unique-frames",
        type=int,
        default=48,
        help="distinct rendered frames cycled through the stream (default 48)",
    )
    p.add_argument(
        "--episode-seconds",
        type=float,
        default=10.0,
        help="episode length: a commit every this many seconds (default 10)",
    )
    p.add_argument("--windows", type=int, default=400, help="training windows to sample (default 400)")
    p.add_argument(
        "--codec-frames", type=int, default=12, help="frames per variant in the codec table (default 12)"
    )
    p.add_argument("--zarr-format", type=int, default=3, choices=(2, 3))
    p.add_argument(
        "--dir", default=None, help="where to write the temporary stores (default: a temp dir, deleted)"
    )
    p.add_argument("--out", default=None, help="JSON path (default outputs/bench/store.json)")
    p.set_defaults(func=run)


def _schema():
    from robot_policy.data import KeySpec

    return {
        "front_rgb": KeySpec("uint8", (480, 640, 3)),
        "side_rgb": KeySpec("uint8", (480, 640, 3)),
        "joint_pos": KeySpec("float32", (7,), units="rad"),
        "joint_vel": KeySpec("float32", (7,), units="rad/s"),
        "action": KeySpec("float32", (8,)),
    }


def _stream(images: dict, joints: np.ndarray, n: int):
    """``n`` frames cycling through the rendered ones (low-dim keys stay unique per frame)."""
    u = joints.shape[0]
    for t in range(n):
        k = t % u
        q = np.zeros(7, np.float32)
        q[:4] = joints[k]
        q[4:] = 0.01 * t
        yield {
            "front_rgb": images["front"][k],
            "side_rgb": images["side"][k],
            "joint_pos": q,
            "joint_vel": np.full(7, 0.1 * np.sin(t), np.float32),
            "action": np.concatenate([q, [1.0]]).astype(np.float32),
        }


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure_write(
    path: Path, images, joints, n_frames: int, fps: float, episode_len: int, codec: str, zarr_format: int
) -> dict:
    from robot_policy.data import EpisodeStore

    store = EpisodeStore.create(
        path, _schema(), fps=fps, robot="bench", zarr_format=zarr_format, overwrite=True, image_codec=codec
    )
    raw = 0
    # CPU time of all threads: on a shared machine wall-clock throughput depends on the other
    # tenants, CPU seconds per frame much less so.
    c0 = time.process_time()
    t0 = time.perf_counter()
    w = None
    for t, frame in enumerate(_stream(images, joints, n_frames)):
        if w is None:
            w = store.begin_episode({"seed": t})
        w.append(frame)
        raw += sum(v.nbytes for v in frame.values())
        if w.num_frames >= episode_len:
            w.commit()
            w = None
    if w is not None:
        w.commit()
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    disk = _dir_bytes(path)
    fps_w = n_frames / dt
    return {
        "codec": codec,
        "frames": n_frames,
        "seconds": dt,
        "frames_per_s": fps_w,
        "raw_MB_per_s": raw / dt / 1e6,
        "disk_MB_per_s": disk / dt / 1e6,
        "realtime_ratio": fps_w / fps,
        "cpu_ms_per_frame": cpu / n_frames * 1e3,
        "size_ratio": raw / disk,
        "disk_MB": disk / 1e6,
    }


def measure_read(path: Path, n_reads: int = 60, seed: int = 0) -> dict:
    """Random single-frame reads of one camera through zarr (what a training loader does)."""
    from robot_policy.data import EpisodeStore

    store = EpisodeStore.open(path)
    arr = store.array("front_rgb")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, store.num_frames, n_reads)
    np.asarray(arr[int(idx[0])])  # warm up codec/registry
    t0 = time.perf_counter()
    for i in idx:
        np.asarray(arr[int(i)])
    return {"read_ms_per_image": (time.perf_counter() - t0) / n_reads * 1e3}


def codec_table(images: dict, n: int = 12, noise_sigma: float = 2.0) -> list[dict]:
    """Pure codec figures (no zarr) on rendered frames, and on frames with sensor-like noise."""
    from robot_policy.data.codecs import numcodec, register_codecs

    register_codecs()
    frames = [images[c][i] for c in images for i in np.linspace(0, len(images[c]) - 1, n // 2).astype(int)]
    rng = np.random.default_rng(0)
    noisy = [
        np.clip(
            f.astype(np.int16) + rng.normal(0, noise_sigma, f.shape).round().astype(np.int16), 0, 255
        ).astype(np.uint8)
        for f in frames
    ]
    rows = []
    for name in CODECS:
        codec = numcodec(name)
        row = {"codec": name}
        for label, data in (("rendered", frames), ("noisy", noisy)):
            codec.encode(data[0][None])
            t0 = time.perf_counter()
            enc = [bytes(codec.encode(f[None])) for f in data]
            te = (time.perf_counter() - t0) / len(data)
            t0 = time.perf_counter()
            dec = [
                np.frombuffer(codec.decode(e), np.uint8) if name == "blosc" else np.asarray(codec.decode(e))
                for e in enc
            ]
            td = (time.perf_counter() - t0) / len(data)
            mse = float(
                np.mean(
                    [np.mean((d.reshape(f.shape).astype(np.float64) - f) ** 2) for d, f in zip(dec, data)]
                )
            )
            row[f"ratio_{label}"] = sum(f.nbytes for f in data) / sum(len(e) for e in enc)
            row[f"enc_ms_{label}"] = te * 1e3
            row[f"dec_ms_{label}"] = td * 1e3
            row[f"psnr_{label}"] = float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)
        rows.append(row)
    return rows


def measure_windows(path: Path, n_windows: int, seed: int = 0) -> dict:
    from robot_policy.data import EpisodeStore, SequenceDataset

    store = EpisodeStore.open(path)
    # Images decoded from disk per window (as with a dataset too big for RAM), low-dim in RAM.
    ds = SequenceDataset(
        store,
        ["front_rgb", "side_rgb", "joint_pos"],
        "action",
        n_obs_steps=2,
        horizon=16,
        in_memory_keys=["joint_pos", "action"],
    )
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ds), n_windows)
    ds[int(idx[0])]
    t0 = time.perf_counter()
    for i in idx:
        ds[int(i)]
    dt = time.perf_counter() - t0
    return {"windows": n_windows, "windows_per_s": n_windows / dt, "ms_per_window": dt / n_windows * 1e3}


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from robot_policy.bench._common import save_results
    from robot_policy.bench._scene import render_frames
    from robot_policy.console import print_table

    fps = 30.0
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    bad = [c for c in codecs if c not in CODECS]
    if bad:
        print(f"error: unknown codec(s) {bad}; choose from {CODECS}")
        return 2
    print(f"rendering {args.unique_frames} frames x 2 cameras at 480x640 with MuJoCo ...")
    images, joints = render_frames(args.unique_frames, fps=fps)
    n_frames = max(1, int(args.seconds * fps))
    episode_len = max(1, int(args.episode_seconds * fps))
    tmp = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench_store_"))
    tmp.mkdir(parents=True, exist_ok=True)
    # Other processes compete for the same cores; record how busy the machine was.
    load_before = os.getloadavg()[0]
    results: dict = {
        "stream": {
            "cameras": 2,
            "height": 480,
            "width": 640,
            "fps": fps,
            "seconds": args.seconds,
            "zarr_format": args.zarr_format,
        }
    }
    try:
        write_rows = []
        for codec in tqdm(codecs, desc="write throughput per codec"):
            path = tmp / f"bench_{codec}.zarr"
            row = measure_write(path, images, joints, n_frames, fps, episode_len, codec, args.zarr_format)
            row.update(measure_read(path))
            write_rows.append(row)
            if codec == codecs[0]:
                results["windows"] = {"codec": codec, **measure_windows(path, args.windows)}
            shutil.rmtree(path, ignore_errors=True)
        results["write"] = write_rows
        results["codecs"] = codec_table(images, n=max(2, args.codec_frames))
    finally:
        if not args.dir:
            shutil.rmtree(tmp, ignore_errors=True)
    results["load_avg_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    print("\nwrite throughput (frame = 2 x 480x640 rgb + joints, appended one at a time):")
    print_table(
        write_rows,
        [
            "codec",
            "frames_per_s",
            "realtime_ratio",
            "cpu_ms_per_frame",
            "raw_MB_per_s",
            "disk_MB_per_s",
            "size_ratio",
            "read_ms_per_image",
        ],
    )
    print("\ncodecs on single 480x640 frames (rendered / with sigma=2 sensor noise):")
    print_table(results["codecs"])
    w = results["windows"]
    print(
        f"\nwindow sampling ({w['codec']}, 2 cameras + joints, n_obs_steps=2, horizon=16): {w['windows_per_s']:.1f} windows/s ({w['ms_per_window']:.2f} ms/window)"
    )
    path = save_results("store", results, args.out)
    la = results["load_avg_1min"]
    print(
        f"load average (1 min) before/after: {la['before']:.1f} / {la['after']:.1f} on {os.cpu_count()} cores"
    )
    print(f"saved {path}")
    return 0
