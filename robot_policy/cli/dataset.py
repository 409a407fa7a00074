"""``robot-policy dataset ...``: inspect and check episode stores (zarr, Diffusion Policy layout)."""

from __future__ import annotations

import json
import sys

from robot_policy.console import add_command, add_group
from robot_policy.data.codecs import IMAGE_CODECS


def register(sub) -> None:
    group = add_group(
        sub,
        "dataset",
        help="inspect and validate episode stores (zarr, Diffusion Policy layout)",
        description="Inspect and validate episode stores: zarr groups with data/<key> arrays and "
        "meta/episode_ends (Diffusion Policy's ReplayBuffer layout, zarr format 2 or 3).",
    )
    p = add_command(
        group,
        "info",
        help="summary of a store: episodes, frames, fps, keys, per-episode metadata",
        description="Print what a store holds: episode and frame counts, fps, robot setup, every key "
        "with its per-frame shape, dtype and codec, and each episode's length and metadata.",
        epilog="examples:\n  robot-policy dataset info datasets/lift.zarr\n"
        "  robot-policy dataset info datasets/lift.zarr --json | jq '.episodes_meta[0]'",
    )
    p.add_argument("path", help="path of the store (a directory ending in .zarr)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--all", action="store_true", help="list every episode (default: first and last 10)")
    p.set_defaults(func=_info)

    p = add_command(
        group,
        "validate",
        help="check a store's consistency; exit 0 if consistent, 1 with the reasons otherwise",
        description="Check the layout, meta/episode_ends (non-decreasing, not past the data), that all "
        "keys have the same length, and the schema. An uncommitted partial episode left by a crashed "
        "writer is reported but is not an error: readers never see it.",
        epilog="examples:\n  robot-policy dataset validate datasets/lift.zarr\n"
        "  robot-policy dataset validate datasets/lift.zarr --deep   # also decode every frame",
    )
    p.add_argument("path", help="path of the store")
    p.add_argument(
        "--deep", action="store_true", help="also decode every committed frame and check floats for NaN/inf"
    )
    p.add_argument(
        "--fail-on-gaps",
        action="store_true",
        help="exit 1 when recorded episodes have stream gaps (they are listed either way)",
    )
    p.set_defaults(func=_validate)

    p = add_command(
        group,
        "convert",
        help="copy a store with another image codec or zarr format (e.g. format 2 for Diffusion Policy)",
        description="Copy every committed episode and its metadata into a new store, re-encoding images "
        "and/or switching zarr format. Record with the default lossless JPEG-XL (small, cheap to write); "
        "convert to blosc for image-heavy training (about 10x faster to decode), to zarr format 2 for "
        "Diffusion Policy / UMI tooling, or to jpegxl-lossy to archive.",
        epilog="examples:\n  robot-policy dataset convert datasets/pick.zarr datasets/pick_train.zarr --image-codec blosc\n"
        "  robot-policy dataset convert datasets/pick.zarr datasets/pick_v2.zarr --zarr-format 2",
    )
    p.add_argument("src", help="source store")
    p.add_argument("dst", help="new store to write")
    p.add_argument("--zarr-format", type=int, choices=(2, 3), default=None, help="default: the source's")
    p.add_argument(
        "--image-codec",
        choices=tuple(IMAGE_CODECS),
        default=None,
        help="re-encode image keys with this codec (default: keep each key's codec)",
    )
    p.add_argument(
        "--fps",
        type=float,
        default=None,
        help="fps to record when the source has none (stores from other tools)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=_convert)

    from robot_policy.cli.dataset_interop import register_interop

    register_interop(group)  # export-lerobot, import-lerobot, import-bag, export-bag, view, fix-codecs


def store_info(store) -> dict:
    """The JSON summary printed by ``dataset info --json``."""
    lengths = store.episode_lengths
    keys = {}
    for k, spec in store.schema.items():
        a = store.array(k)
        entry = {
            "shape": list(spec.shape),
            "dtype": spec.dtype,
            "chunks": list(a.chunks),
            "codec": spec.codec or _codec_name(a),
        }
        if spec.names:
            entry["names"] = spec.names
        if spec.units:
            entry["units"] = spec.units
        keys[k] = entry
    metas = store.episodes_meta()
    return {
        "path": store.path,
        "zarr_format": store.zarr_format,
        "episodes": store.num_episodes,
        "frames": store.num_frames,
        "fps": store.fps,
        "robot": store.robot,
        "duration_s": (store.num_frames / store.fps) if store.fps else None,
        "keys": keys,
        "episodes_meta": [
            {**m, "index": i, "length": int(n)} for i, (n, m) in enumerate(zip(lengths, metas))
        ],
    }


def _codec_name(a) -> str:
    try:
        comp = getattr(a, "compressors", None) or ()
        ser = getattr(a, "serializer", None)
        names = [type(c).__name__ for c in comp]
        if ser is not None and type(ser).__name__ != "BytesCodec":
            names.insert(0, type(ser).__name__)
        return "+".join(names) or "none"
    except Exception:  # format-2 arrays from other tools: best effort only
        return "?"


def _open(path):
    from robot_policy.data import EpisodeStore

    try:
        return EpisodeStore.open(path, "r")
    except Exception as e:
        print(
            f"error: cannot open {path}: {e}\nhint: 'robot-policy dataset validate {path}' says what is wrong",
            file=sys.stderr,
        )
        return None


def _info(args) -> int:
    store = _open(args.path)
    if store is None:
        return 1
    info = store_info(store)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    dur = f"{info['duration_s']:.1f} s" if info["duration_s"] is not None else "unknown (no fps)"
    print(f"{info['path']}  (zarr format {info['zarr_format']})")
    print(
        f"  robot: {info['robot'] or '-'}   fps: {info['fps'] or '-'}   episodes: {info['episodes']}   frames: {info['frames']}   duration: {dur}"
    )
    print()
    from robot_policy.console import print_table

    rows = [
        {
            "key": k,
            "dtype": v["dtype"],
            "shape": "x".join(map(str, v["shape"])) or "()",
            "codec": v["codec"],
            "frames/chunk": v["chunks"][0],
        }
        for k, v in info["keys"].items()
    ]
    print_table(rows)
    eps = info["episodes_meta"]
    if eps:
        print()
        shown = eps if args.all or len(eps) <= 20 else eps[:10] + eps[-10:]
        rows = []
        hil = any("interventions" in e for e in eps)
        for e in shown:
            meta = {k: v for k, v in e.items() if k not in SHOWN_APART}
            text = json.dumps(meta, separators=(",", ":"), default=str)
            row = {"episode": e["index"], "length": e["length"], "gaps": _gap_text(e.get("gaps") or [])}
            if hil:
                row["interventions"] = _intervention_text(e)
            rows.append({**row, "metadata": text if len(text) < 90 else text[:87] + "..."})
        print_table(rows)
        if len(shown) < len(eps):
            print(f"... {len(eps) - len(shown)} more episodes (--all lists them)")
        if hil:
            print("\n" + _intervention_summary(eps))
        gapped = [e for e in eps if e.get("gaps")]
        if gapped:
            print(
                f"\n{len(gapped)} of {len(eps)} episodes have stream gaps (frames flagged in data/valid; "
                "training skips windows across them). 'dataset validate' lists each gap."
            )
    return 0


SHOWN_APART = (
    "index",
    "length",
    "gaps",
    "frames_missing",
    "interventions",
    "intervention_frames",
    "intervention_s",
    "intervention_starts",
)
"""Episode metadata shown in their own columns / lines, not in the metadata text."""


def _intervention_text(e: dict) -> str:
    """``2 (0.4 s)``: interventions in the episode and time under human control."""
    if "interventions" not in e:
        return "-"
    s = e.get("intervention_s")
    return f"{e['interventions']}" + (f" ({s:.1f} s)" if s is not None else "")


def _intervention_summary(eps: list[dict]) -> str:
    """One line over the episodes recorded with intervention flags (human in the loop)."""
    flagged = [e for e in eps if "interventions" in e]
    n = sum(int(e["interventions"]) for e in flagged)
    frames = sum(int(e.get("intervention_frames", 0)) for e in flagged)
    total = sum(int(e["length"]) for e in flagged) or 1
    corrected = sum(1 for e in flagged if e["interventions"])
    ops = sorted({str(e["operator"]) for e in eps if e.get("operator")})
    return (
        f"interventions: {n} in {corrected} of {len(flagged)} episodes with intervention flags, "
        f"{100.0 * frames / total:.1f}% of their frames under human control; operators: {', '.join(ops) or '-'}"
    )


def _gap_text(gaps: list[dict]) -> str:
    """``/joint_states@17(3)`` per gap: stream, first flagged frame, frames missing or flagged."""
    if not gaps:
        return "-"
    parts = [f"{g['stream']}@{g['frame']}({g.get('missing', g.get('frames'))})" for g in gaps[:2]]
    return " ".join(parts) + (f" +{len(gaps) - 2}" if len(gaps) > 2 else "")


def _convert(args) -> int:
    from robot_policy.data.convert import convert_store

    try:
        out = convert_store(
            args.src,
            args.dst,
            args.zarr_format,
            args.image_codec,
            fps=args.fps,
            overwrite=args.overwrite,
            progress=True,
        )
    except (FileExistsError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"wrote {out.path}: {out.num_episodes} episodes, {out.num_frames} frames (zarr format {out.zarr_format})"
    )
    return 0


def _validate(args) -> int:
    from robot_policy.data.validate import validate_store

    rep = validate_store(args.path, deep=args.deep)
    for n in rep.notes:
        print(f"note: {n}")
    for g in rep.gaps:
        print(f"gap: {g}")
    if rep.ok and rep.gaps and args.fail_on_gaps:
        print(f"GAPS: {args.path}: {len(rep.gaps)} recorded stream gap(s) (--fail-on-gaps)", file=sys.stderr)
        return 1
    if rep.ok:
        print(
            f"OK: {args.path}: {rep.episodes} episodes, {rep.frames} frames, consistent"
            + (" (all frames decoded)" if args.deep else "")
        )
        return 0
    for e in rep.errors:
        print(f"error: {e}", file=sys.stderr)
    print(f"INVALID: {args.path}: {len(rep.errors)} problem(s)", file=sys.stderr)
    return 1
