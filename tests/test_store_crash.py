"""SIGKILL a writing process at chosen points of the commit protocol (and at random times),
then check that every committed episode is intact, the store opens and validates, and the
partial episode is invisible and cleaned up by the next writer."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from robot_policy.data import EpisodeStore
from robot_policy.data.validate import validate_store

WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    import zarr
    import robot_policy.data._zarr_io as zio
    import robot_policy.data.writer as wr
    from robot_policy.data import EpisodeStore, KeySpec

    path, point, fmt = sys.argv[1], sys.argv[2], int(sys.argv[3])
    wr.FLUSH_BYTES = 512  # push frames of the open episode to disk while it streams
    SCHEMA = {"joint_pos": KeySpec("float32", (3,)), "cam": KeySpec("uint8", (6, 8, 3)),
              "action": KeySpec("float32", (2,))}

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def episode(e):
        rng = np.random.default_rng(e)
        T = 5 + e % 4
        return {"joint_pos": rng.normal(size=(T, 3)).astype(np.float32),
                "cam": rng.integers(0, 255, (T, 6, 8, 3), dtype=np.uint8),
                "action": rng.normal(size=(T, 2)).astype(np.float32)}

    def committed(e):
        print("COMMITTED", e, flush=True)

    if point == "recover":  # a second writer that dies while cleaning up a crashed one's tail
        orig = zarr.Array.resize
        def resize(self, shape):
            orig(self, shape)
            die()
        zarr.Array.resize = resize
        EpisodeStore.open(path, "a")
        sys.exit(3)

    store = EpisodeStore.create(path, SCHEMA, fps=10, zarr_format=fmt)
    for e in range(2):
        store.add_episode(episode(e), meta={"e": e})
        committed(e)

    if point == "loop":  # killed by the parent at a random moment
        e = 2
        while True:
            ep = episode(e)
            w = store.begin_episode(meta={"e": e})
            for t in range(len(ep["action"])):
                w.append({k: v[t] for k, v in ep.items()})
            if e % 3 == 0:
                w.discard()
            else:
                w.commit()
                committed(e)
            e += 1

    ep = episode(2)
    if point == "mid_stream":
        w = store.begin_episode(meta={"e": 2}, background=False)  # frames surely on disk
        for t in range(4):
            w.append({k: v[t] for k, v in ep.items()})
        die()
    if point == "before_meta":  # all frames flushed, nothing of the commit written
        EpisodeStore._commit = lambda self, n, meta: die()
    if point == "naive_order":  # zarr's resize-then-assign: new shape first, chunk later
        zio.append_commit_value = lambda arr, value: (arr.resize((arr.shape[0] + 1,)), die())
    if point == "after_meta":  # per-episode metadata written, episode_ends untouched
        zio.append_commit_value = lambda arr, value: die()
    if point == "after_chunk":  # new end written into the chunk, shape not yet updated
        from zarr.core.array import Array, AsyncArray
        def ghost_then_die(arr, value):
            n = arr.shape[0]
            aa = arr._async_array
            Array(AsyncArray(metadata=aa.metadata.update_shape((n + 1,)), store_path=aa.store_path,
                             config=aa.config))[n] = value
            die()
        zio.append_commit_value = ghost_then_die
    if point == "mid_discard":  # truncating the partial episode's arrays
        w = store.begin_episode(meta={"e": 2})
        w.extend(ep)
        orig = zarr.Array.resize
        def resize(self, shape):
            orig(self, shape)
            die()
        zarr.Array.resize = resize
        w.discard()
    store.add_episode(ep, meta={"e": 2})
    committed(2)
    sys.exit(0)
    """
)


def expected_episode(e: int) -> dict:
    rng = np.random.default_rng(e)
    T = 5 + e % 4
    return {
        "joint_pos": rng.normal(size=(T, 3)).astype(np.float32),
        "cam": rng.integers(0, 255, (T, 6, 8, 3), dtype=np.uint8),
        "action": rng.normal(size=(T, 2)).astype(np.float32),
    }


def run_writer(tmp_path, path, point: str, fmt: int) -> tuple[int, list[int]]:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    p = subprocess.run(
        [sys.executable, str(script), str(path), point, str(fmt)], capture_output=True, text=True, timeout=120
    )
    done = [int(line.split()[1]) for line in p.stdout.splitlines() if line.startswith("COMMITTED")]
    return p.returncode, done


def check_store(path, committed: list[int], allow_one_more: bool = False) -> EpisodeStore:
    """Committed episodes intact and in order; the store validates; then a writer cleans up."""
    rep = validate_store(path, deep=True)
    assert rep.ok, rep.errors
    ro = EpisodeStore.open(path, "r")
    n = ro.num_episodes
    assert n == len(committed) or (allow_one_more and n == len(committed) + 1), (n, committed)
    metas = ro.episodes_meta()
    for i in range(n):
        e = metas[i]["e"]
        if i < len(committed):
            assert e == committed[i]
        got = ro.get_episode(i)
        for k, v in expected_episode(e).items():
            np.testing.assert_array_equal(got[k], v, err_msg=f"episode {i} key {k}")
    # The next writer truncates whatever tail the crash left and appends normally.
    rw = EpisodeStore.open(path, "a")
    assert all(rw.array(k).shape[0] == rw.num_frames for k in rw.keys)
    extra = expected_episode(7)
    idx = rw.add_episode(extra, meta={"e": 7})
    assert idx == n
    rep = validate_store(path, deep=True)
    assert rep.ok and not rep.notes, (rep.errors, rep.notes)
    np.testing.assert_array_equal(EpisodeStore.open(path).get_episode(idx)["cam"], extra["cam"])
    return ro


@pytest.mark.parametrize("fmt", [3, 2])
@pytest.mark.parametrize("point", ["mid_stream", "before_meta", "after_meta", "after_chunk", "mid_discard"])
def test_sigkill_at_commit_protocol_points(tmp_path, point, fmt):
    path = tmp_path / "s.zarr"
    rc, done = run_writer(tmp_path, path, point, fmt)
    assert rc == -signal.SIGKILL, f"writer was not killed at {point} (rc={rc})"
    assert done == [0, 1]
    if point != "mid_discard":
        # The crash left frames past the last commit (or a pending marker): reported, not an error.
        rep = validate_store(path)
        assert rep.ok and any("uncommitted" in n or "writer has an episode open" in n for n in rep.notes), (
            rep.notes
        )
    check_store(path, done)


def test_naive_commit_order_would_corrupt(tmp_path):
    """Why the commit writes the chunk before the shape: the naive order, killed in between,
    leaves a fill value as the last episode end, and validation catches it."""
    path = tmp_path / "s.zarr"
    rc, done = run_writer(tmp_path, path, "naive_order", 3)
    assert rc == -signal.SIGKILL and done == [0, 1]
    rep = validate_store(path)
    assert not rep.ok and any("decreases at index 2" in e for e in rep.errors), rep.errors


def test_sigkill_while_recovering_a_crashed_tail(tmp_path):
    path = tmp_path / "s.zarr"
    rc, done = run_writer(tmp_path, path, "mid_stream", 3)
    assert rc == -signal.SIGKILL
    rc, _ = run_writer(tmp_path, path, "recover", 3)
    assert rc == -signal.SIGKILL  # died after truncating the first array
    check_store(path, done)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_random_moments(tmp_path, seed):
    """Kill a writer that streams, commits and discards in a loop, at a random moment."""
    path = tmp_path / "s.zarr"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), "loop", "3"], stdout=subprocess.PIPE, text=True
    )
    done: list[int] = []
    target = 3 + seed * 2
    try:
        for line in proc.stdout:
            if line.startswith("COMMITTED"):
                done.append(int(line.split()[1]))
            if len(done) >= target:
                break
        time.sleep(random.Random(seed).uniform(0.0, 0.05))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait()
    done += [int(line.split()[1]) for line in rest.splitlines() if line.startswith("COMMITTED")]
    assert len(done) >= target
    # A kill between the commit point and the print leaves one more episode than printed.
    check_store(path, done, allow_one_more=True)
