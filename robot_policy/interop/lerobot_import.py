"""LeRobotDataset v3 import: a LeRobot folder to a new episode store."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field

import numpy as np

from robot_policy.interop.lerobot_format import TOLERANCE_S, episode_meta
from robot_policy.interop.lerobot_reader import LeRobotFolder, column_to_numpy


@dataclass
class ImportReport:
    path: str
    episodes: int
    frames: int
    seconds: float
    keys: dict[str, str]
    """store key -> LeRobot feature"""
    notes: list[str] = field(default_factory=list)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        by_feature: dict[str, list[str]] = {}
        for key, feat in self.keys.items():
            by_feature.setdefault(feat, []).append(key)
        keys = ", ".join(f"{f} -> {'+'.join(k)}" for f, k in by_feature.items())
        out = (
            f"wrote {self.path}: {self.episodes} episodes, {self.frames} frames in {self.seconds:.1f} s "
            f"({self.frames_per_s:.0f} frames/s)\n  features: {keys}"
        )
        return out + "".join(f"\n  note: {n}" for n in self.notes)


def import_lerobot(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    image_codec: str | None = None,
    zarr_format: int = 3,
    overwrite: bool = False,
    progress: bool = False,
) -> ImportReport:
    """Read the LeRobot v3 folder ``src`` and write it as a new episode store ``dst``."""
    from tqdm import tqdm

    from robot_policy.data import EpisodeStore, KeySpec

    t0 = time.perf_counter()
    ds = LeRobotFolder(src)
    own = ds.info.get("robot_policy") or {}
    notes: list[str] = []
    skipped = [f for f, ft in ds.features.items() if ft["dtype"] == "string"]
    if skipped:
        notes.append(f"string features {skipped} are not imported (the store holds numbers and images)")

    # per-frame task changes become a key; the per-episode task list goes to the metadata
    task_key = False
    schema: dict[str, KeySpec] = {}
    for key, m in ds.mapping.items():
        shape = tuple(m.get("shape") or ())
        schema[key] = KeySpec(
            dtype=m["dtype"],
            shape=shape,
            names=m.get("names") if len(shape) == 1 else None,
            units=m.get("units"),
            codec=m.get("codec") if image_codec is None else None,
            extra=dict(m.get("extra") or {}),
        )
    if not own:
        for ep in range(ds.num_episodes):
            t = ds.episode_table(ep)
            if len(set(t.column("task_index").to_pylist())) > 1:
                task_key = True
                break
        if task_key:
            schema["task_index"] = KeySpec("int64", ())
            notes.append("tasks change within episodes: per-frame 'task_index' kept as a key")
    kwargs = {"image_codec": image_codec} if image_codec else {}
    attrs = {**(own.get("attrs") or {}), "imported_from": str(src)}
    store = EpisodeStore.create(
        dst,
        schema,
        fps=float(own.get("fps") or ds.fps),
        robot=own.get("robot", ds.info.get("robot_type")),
        zarr_format=zarr_format,
        overwrite=overwrite,
        attrs=attrs,
        **kwargs,
    )
    total = sum(e["length"] for e in ds.episodes)
    bar = tqdm(total=total, desc="import-lerobot", unit="frame", disable=not progress)
    try:
        for ep, e in enumerate(ds.episodes):
            rows = ds.episode_table(ep)
            n = rows.num_rows
            ts = column_to_numpy(rows.column("timestamp"), n).astype(np.float64)
            fi = column_to_numpy(rows.column("frame_index"), n)
            off = np.abs(ts - fi / ds.fps)
            if off.size and off.max() > TOLERANCE_S:
                i = int(off.argmax())
                raise ValueError(
                    f"{src}: episode {ep}, frame {int(fi[i])}: timestamp {ts[i]:.6f} s is not frame_index / fps "
                    f"= {fi[i] / ds.fps:.6f} s (tolerance {TOLERANCE_S} s)"
                )
            frames: dict[str, np.ndarray] = {}
            for key, m in ds.mapping.items():
                spec = schema[key]
                feat = m["feature"]
                ft = ds.features[feat]
                if ft["dtype"] == "video":
                    img = ds.video_frames(feat, ep, ts)
                    if img.shape[1:] != (spec.shape[0], spec.shape[1], 3):
                        raise ValueError(
                            f"{src}: feature {feat!r} decodes to {img.shape[1:]}, info.json says {tuple(ft['shape'])}"
                        )
                    frames[key] = img[..., :1].reshape((n, *spec.shape)) if m.get("gray") else img
                elif ft["dtype"] == "image":
                    frames[key] = _decode_images(rows.column(feat), n, spec.shape)
                else:
                    v = column_to_numpy(rows.column(feat), n)
                    if "slice" in m:
                        a, b = m["slice"]
                        v = v.reshape(n, -1)[:, a:b]
                    frames[key] = np.ascontiguousarray(
                        v.reshape((n, *spec.shape)).astype(spec.dtype, copy=False)
                    )
            if task_key:
                frames["task_index"] = column_to_numpy(rows.column("task_index"), n).astype(np.int64)
            store.add_episode(frames, meta=episode_meta(e, ds.tasks))
            bar.update(n)
    except BaseException:
        store.close()
        shutil.rmtree(dst, ignore_errors=True)
        raise
    finally:
        bar.close()
    store.close()
    return ImportReport(
        path=str(dst),
        episodes=ds.num_episodes,
        frames=total,
        seconds=time.perf_counter() - t0,
        keys={k: m["feature"] for k, m in ds.mapping.items()},
        notes=notes,
    )


def _decode_images(col, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """LeRobot ``image`` features: a struct column {bytes, path} of PNG/JPEG files."""
    import imagecodecs

    out = np.empty((n, *shape), dtype=np.uint8)
    for i, item in enumerate(col.to_pylist()):
        data = item.get("bytes") if isinstance(item, dict) else item
        if data is None:
            raise ValueError(
                f"image row {i} has no embedded bytes (path {item.get('path')!r}): embedded images only"
            )
        img = imagecodecs.imread(data)
        out[i] = img.reshape(shape) if img.size == out[i].size else img[..., : shape[-1]]
    return out
