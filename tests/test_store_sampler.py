"""SequenceDataset windows (edge padding at episode starts and ends) and train/val split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_policy.data import EpisodeStore, KeySpec, SequenceDataset, train_val_split

LENGTHS = [5, 20, 3]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Each frame's values encode (episode, step) so windows can be checked exactly."""
    path = tmp_path_factory.mktemp("sampler") / "s.zarr"
    schema = {
        "state": KeySpec("float32", (2,)),
        "cam": KeySpec("uint8", (4, 5, 3)),
        "action": KeySpec("float32", (3,)),
    }
    s = EpisodeStore.create(path, schema, fps=10)
    for e, T in enumerate(LENGTHS):
        t = np.arange(T, dtype=np.float32)
        s.add_episode(
            {
                "state": np.stack([np.full(T, e, np.float32), t], -1),
                "cam": np.broadcast_to(
                    (10 * e + np.arange(T, dtype=np.uint8))[:, None, None, None], (T, 4, 5, 3)
                ).copy(),
                "action": np.stack([np.full(T, e, np.float32), t, -t], -1),
            }
        )
    return EpisodeStore.open(path)


def steps(arr: np.ndarray) -> list[int]:
    return arr[:, 1].astype(int).tolist()


def test_windows_pad_by_repeating_edge_frames(store):
    ds = SequenceDataset(store, ["state", "cam"], "action", n_obs_steps=2, horizon=6)
    assert len(ds) == sum(LENGTHS)  # one window per frame (its current step)
    # Start of episode 0: the observation before frame 0 repeats frame 0.
    item = ds[0]
    assert steps(item["obs"]["state"]) == [0, 0]
    assert steps(item["action"]) == [0, 0, 1, 2, 3, 4]
    assert item["obs"]["cam"].shape == (2, 4, 5, 3) and item["obs"]["cam"][:, 0, 0, 0].tolist() == [0, 0]
    # End of episode 0 (length 5): actions past the end repeat the last frame, never episode 1.
    assert ds.locate(4) == (0, 4)
    item = ds[4]
    assert steps(item["obs"]["state"]) == [3, 4]
    assert steps(item["action"]) == [3, 4, 4, 4, 4, 4]
    assert set(item["action"][:, 0].tolist()) == {0.0}
    # Start of episode 1.
    assert ds.locate(5) == (1, 0)
    item = ds[5]
    assert item["obs"]["state"].tolist() == [[1, 0], [1, 0]]
    assert steps(item["action"]) == [0, 0, 1, 2, 3, 4]
    # Middle of episode 1: no padding.
    item = ds[5 + 10]
    assert steps(item["obs"]["state"]) == [9, 10] and steps(item["action"]) == [9, 10, 11, 12, 13, 14]
    # A 3-frame episode shorter than the horizon: padded at both ends.
    item = ds[len(ds) - 3]
    assert ds.locate(len(ds) - 3) == (2, 0)
    assert steps(item["action"]) == [0, 0, 1, 2, 2, 2]
    assert item["obs"]["cam"][:, 0, 0, 0].tolist() == [20, 20]
    assert steps(ds[-1]["obs"]["state"]) == [1, 2]


def test_every_window_stays_in_one_episode_and_has_fixed_shapes(store):
    ds = SequenceDataset(store, ["state", "cam"], "action", n_obs_steps=3, horizon=8)
    for i in range(len(ds)):
        item = ds[i]
        ep, t = ds.locate(i)
        assert item["obs"]["state"].shape == (3, 2) and item["action"].shape == (8, 3)
        assert set(item["obs"]["state"][:, 0].tolist()) == {ep} and set(item["action"][:, 0].tolist()) == {ep}
        assert item["obs"]["state"][-1, 1] == t  # the last observation is the current step
        assert item["action"][2, 1] == t  # action index n_obs_steps-1 is the current step


def test_pad_after_episode_subset_and_disk_reads(store):
    ds = SequenceDataset(store, ["cam"], "action", n_obs_steps=2, horizon=6, pad_after=1)
    # current steps stop where a window would pad more than one frame past the end
    assert len(ds) == sum(max(0, L - 3) for L in LENGTHS)
    assert max(steps(ds[i]["action"])[-1] for i in range(len(ds))) <= 19
    sub = SequenceDataset(store, ["state"], "action", 2, 4, episodes=[2, 0])
    assert len(sub) == 8 and sub.locate(0) == (2, 0)
    on_disk = SequenceDataset(store, ["cam", "state"], "action", 2, 6, in_memory_keys=[])
    in_ram = SequenceDataset(store, ["cam", "state"], "action", 2, 6)
    assert not isinstance(on_disk._arrays["cam"], np.ndarray) and isinstance(
        in_ram._arrays["cam"], np.ndarray
    )
    for i in (0, 4, 5, 17, len(in_ram) - 1):
        np.testing.assert_array_equal(on_disk[i]["obs"]["cam"], in_ram[i]["obs"]["cam"])
    with pytest.raises(KeyError, match="nope"):
        SequenceDataset(store, ["nope"], "action")
    with pytest.raises(IndexError):
        SequenceDataset(store, ["state"], "action", episodes=[3])
    with pytest.raises(ValueError, match="horizon"):
        SequenceDataset(store, ["state"], "action", n_obs_steps=4, horizon=2)


def test_torch_dataloader_batches(store):
    ds = SequenceDataset(store, ["state", "cam"], "action", n_obs_steps=2, horizon=4)
    assert isinstance(ds, torch.utils.data.Dataset)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=7, shuffle=True, num_workers=2)))
    assert batch["obs"]["cam"].shape == (7, 2, 4, 5, 3) and batch["obs"]["cam"].dtype == torch.uint8
    assert batch["action"].shape == (7, 4, 3) and batch["action"].dtype == torch.float32


def test_train_val_split():
    tr, va = train_val_split(20, val_ratio=0.2, seed=3)
    assert len(va) == 4 and len(tr) == 16
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(20))
    tr2, va2 = train_val_split(20, val_ratio=0.2, seed=3)
    assert tr.tolist() == tr2.tolist() and va.tolist() == va2.tolist()
    assert train_val_split(20, 0.2, seed=4)[1].tolist() != va.tolist()
    assert [len(x) for x in train_val_split(3, 0.1)] == [2, 1]  # at least one val episode
    assert [len(x) for x in train_val_split(1, 0.5)] == [1, 0]  # at least one train episode
    assert [len(x) for x in train_val_split(5, 0.0)] == [5, 0]
    with pytest.raises(ValueError):
        train_val_split(5, 1.0)


def test_dataset_pickles_for_spawned_workers(store):
    import pickle

    ds = SequenceDataset(
        store, ["state", "cam"], "action", n_obs_steps=2, horizon=4, in_memory_keys=["state", "action"]
    )
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.store.path == store.path and not isinstance(copy._arrays["cam"], np.ndarray)
    for i in (0, 7, len(ds) - 1):
        np.testing.assert_array_equal(copy[i]["obs"]["cam"], ds[i]["obs"]["cam"])
        np.testing.assert_array_equal(copy[i]["action"], ds[i]["action"])


def test_batch_gathers_the_same_windows_and_short_episodes_can_be_kept(store):
    ds = SequenceDataset(
        store, ["state", "cam"], "action", n_obs_steps=2, horizon=6, pad_after=1, in_memory_keys=["state"]
    )
    b = ds.batch(np.arange(len(ds)))  # "cam" and "action" read from zarr, "state" from RAM
    for i in range(len(ds)):
        item = ds[i]
        for k in ("state", "cam"):
            np.testing.assert_array_equal(b["obs"][k][i], item["obs"][k])
        np.testing.assert_array_equal(b["action"][i], item["action"])
    assert b["action"].dtype == np.float32
    # The 3-frame episode is too short for any window padding at most one frame past its end;
    # keep_short gives it one, at its first frame.
    kept = SequenceDataset(store, ["state"], "action", n_obs_steps=2, horizon=6, pad_after=1, keep_short=True)
    assert len(kept) == len(ds) + 1 and kept.locate(len(kept) - 1) == (2, 0)
    assert steps(kept[-1]["action"]) == [0, 0, 1, 2, 2, 2]


def test_windows_across_a_recorded_gap_are_skipped(tmp_path):
    from robot_policy.data import EpisodeStore, KeySpec, SequenceDataset
    from robot_policy.data.sampler import WindowIndex

    # Index rule alone: one 10-frame episode, frame 4 flagged; windows of 3 frames (To=1, H=3).
    ok = np.ones(10, bool)
    ok[4] = False
    full = WindowIndex([10], n_obs_steps=1, horizon=3)
    gapped = WindowIndex([10], n_obs_steps=1, horizon=3, frame_ok=ok)
    spans = gapped.steps(np.arange(len(gapped)), 3)
    assert not np.any(spans == 4)  # no kept window reads the flagged frame
    assert gapped.skipped == 3 and len(gapped) == len(full) - 3  # windows at steps 2, 3, 4
    with pytest.raises(ValueError, match="frame_ok has 9 flags for 10 frames"):
        WindowIndex([10], 1, 3, frame_ok=ok[:9])

    # Through a store with the recorder's ``valid`` key: the second episode's frame 2 is flagged.
    schema = {
        "x": KeySpec(dtype="float32", shape=(1,)),
        "action": KeySpec(dtype="float32", shape=(1,)),
        "valid": KeySpec(dtype="bool", shape=(2,), names=["/joint_states", "/cam"]),
    }
    store = EpisodeStore.create(tmp_path / "gaps.zarr", schema, fps=10)
    for n, bad in ((6, None), (6, 2)):
        v = np.ones((n, 2), bool)
        if bad is not None:
            v[bad, 1] = False
        f = np.arange(n, dtype=np.float32)[:, None]
        store.add_episode({"x": f, "action": f, "valid": v})
    ds = SequenceDataset(store, ["x"], n_obs_steps=1, horizon=2)
    every = SequenceDataset(store, ["x"], n_obs_steps=1, horizon=2, skip_gaps=False)
    assert len(every) - len(ds) == 2  # windows at steps 1 and 2 of episode 1 read frame 2
    kept = {ds.locate(i) for i in range(len(ds))}
    assert (1, 1) not in kept and (1, 2) not in kept and (1, 3) in kept and (0, 1) in kept
