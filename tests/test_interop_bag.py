"""rosbag2 import through the recorder's aligner, and export for `ros2 bag play`.

The bags are written here with `rosbags` itself (MCAP and sqlite3), the way a ROS 2 graph
records them: capture stamps in the headers, log times a few ms later, services recorded as
`/recorder/*/_service_event` (`ros2 bag record --include-services`).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rosbags")

from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402

from robot_policy.data import EpisodeStore, KeySpec  # noqa: E402
from robot_policy.interop import bag as B  # noqa: E402

HZ = 20.0
JOINTS = [f"panda_joint{i}" for i in range(1, 8)]
HW_YAML = """
name: bagbot
arm: ur_rtde
task: pick
joint_names: [panda_joint1, panda_joint2, panda_joint3, panda_joint4, panda_joint5, panda_joint6, panda_joint7]
position_lower: [-3, -3, -3, -3, -3, -3, -3]
position_upper: [3, 3, 3, 3, 3, 3, 3]
velocity_limits: [1, 1, 1, 1, 1, 1, 1]
gripper_joint: panda_finger_joint1
control_hz: 20.0
cameras:
  - {name: front, width: 16, height: 12, fps: 20, backend: uvc}
  - {name: wrist, width: 16, height: 12, fps: 20, backend: uvc}
"""


@pytest.fixture
def hw(tmp_path):
    p = tmp_path / "bagbot.yaml"
    p.write_text(HW_YAML)
    return str(p)


def img_at(k: int, cam: int) -> np.ndarray:
    yy, xx = np.mgrid[0:12, 0:16]
    return np.stack([(xx * 10 + k) % 256, (yy * 20 + cam * 50) % 256, np.full_like(xx, k % 256)], -1).astype(
        np.uint8
    )


class BagBuilder:
    """Messages of a simulated recording session, written in log-time order."""

    def __init__(self, seed: int = 0) -> None:
        self.ts = B.typestore()
        self.T = self.ts.types
        self.rng = np.random.default_rng(seed)
        self.msgs: list[tuple[float, str, str, object]] = []  # (log time, topic, type, msg)
        self.truth: dict[float, dict] = {}  # joint state stamp -> values written

    def add(self, t_log, topic, msgtype, msg):
        self.msgs.append((t_log, topic, msgtype, msg))

    def hdr(self, t):
        return B._header(self.ts, t)

    def stream(self, t0: float, n: int, drop_cam: set[int] = frozenset(), compressed_wrist: bool = False):
        T = self.T
        for k in range(n):
            t = t0 + k / HZ
            pos = self.rng.normal(size=8)
            vel = self.rng.normal(size=8)
            js = T["sensor_msgs/msg/JointState"](
                header=self.hdr(t),
                name=JOINTS + ["panda_finger_joint1"],
                position=pos,
                velocity=vel,
                effort=np.zeros(0),
            )
            self.add(t + self.rng.uniform(0.001, 0.01), "/joint_states", "sensor_msgs/msg/JointState", js)
            self.truth[round(t, 6)] = {"pos": pos, "vel": vel, "k": k}
            tc = t - 0.013  # camera exposure a bit before the joint state
            if k not in drop_cam:
                im = img_at(k, 0)
                msg = T["sensor_msgs/msg/Image"](
                    header=self.hdr(tc),
                    height=12,
                    width=16,
                    encoding="bgr8",
                    is_bigendian=0,
                    step=48,
                    data=im[..., ::-1].reshape(-1).copy(),
                )
                self.add(
                    tc + self.rng.uniform(0.02, 0.06), "/front/color/image_raw", "sensor_msgs/msg/Image", msg
                )
            wr = img_at(k, 1)
            if compressed_wrist:
                import imagecodecs

                msg = T["sensor_msgs/msg/CompressedImage"](
                    header=self.hdr(tc),
                    format="rgb8; png compressed rgb8",
                    data=np.frombuffer(imagecodecs.png_encode(wr), np.uint8),
                )
                self.add(
                    tc + 0.03, "/wrist/color/image_raw/compressed", "sensor_msgs/msg/CompressedImage", msg
                )
            else:
                msg = T["sensor_msgs/msg/Image"](
                    header=self.hdr(tc),
                    height=12,
                    width=16,
                    encoding="rgb8",
                    is_bigendian=0,
                    step=48,
                    data=wr.reshape(-1).copy(),
                )
                self.add(tc + 0.03, "/wrist/color/image_raw", "sensor_msgs/msg/Image", msg)
            cmd = T["sensor_msgs/msg/JointState"](
                header=self.hdr(t + 0.02),
                name=JOINTS + ["gripper"],
                position=np.full(8, float(k)),
                velocity=np.zeros(0),
                effort=np.zeros(0),
            )
            self.add(t + 0.021, "/joint_commands", "sensor_msgs/msg/JointState", cmd)

    def service(self, t: float, name: str, seq: int, data: bool | None = None):
        T = self.T
        kind = "SetBool" if data is not None else "Trigger"
        info = T["service_msgs/msg/ServiceEventInfo"](
            event_type=B.REQUEST_RECEIVED,
            stamp=B._time(self.ts, t),
            client_gid=np.arange(16, dtype=np.uint8),
            sequence_number=seq,
        )
        req = (
            T[f"std_srvs/srv/{kind}_Request"](data=data)
            if data is not None
            else T["std_srvs/srv/Trigger_Request"](structure_needs_at_least_one_member=0)
        )
        ev = T[f"std_srvs/srv/{kind}_Event"](info=info, request=[req], response=[])
        self.add(t + 0.001, f"/recorder/{name}/_service_event", f"std_srvs/srv/{kind}_Event", ev)
        # the client side of the same call, recorded too: must not count twice
        info2 = T["service_msgs/msg/ServiceEventInfo"](
            event_type=B.REQUEST_SENT,
            stamp=B._time(self.ts, t - 0.002),
            client_gid=np.arange(16, dtype=np.uint8),
            sequence_number=seq,
        )
        self.add(
            t,
            f"/recorder/{name}/_service_event",
            f"std_srvs/srv/{kind}_Event",
            T[f"std_srvs/srv/{kind}_Event"](info=info2, request=[req], response=[]),
        )

    def marker(self, t: float, word: str):
        self.add(t, B.MARKER_TOPIC, "std_msgs/msg/String", self.T["std_msgs/msg/String"](data=word))

    def write(self, path, storage=StoragePlugin.MCAP):
        w = Writer(path, version=8, storage_plugin=storage)
        w.open()
        conns = {}
        for t, topic, typ, msg in sorted(self.msgs, key=lambda m: m[0]):
            if topic not in conns:
                if typ.startswith("std_srvs/srv/"):  # rosbags cannot generate service definitions
                    conns[topic] = w.add_connection(
                        topic, typ, msgdef=srv_msgdef(typ), rihs01="RIHS01_" + "0" * 64
                    )
                else:
                    conns[topic] = w.add_connection(topic, typ, typestore=self.ts)
            w.write(conns[topic], int(t * 1e9), self.ts.serialize_cdr(msg, typ))
        w.close()
        return path


def srv_msgdef(typ: str) -> str:
    """The ros2msg definition rosbag2 stores for a std_srvs service event type."""
    kind = typ.removeprefix("std_srvs/srv/").removesuffix("_Event")
    req = "uint8 structure_needs_at_least_one_member" if kind == "Trigger" else "bool data"
    sep = "=" * 80
    return (
        f"service_msgs/ServiceEventInfo info\nstd_srvs/{kind}_Request[<=1] request\nstd_srvs/{kind}_Response[<=1] response\n"
        f"{sep}\nMSG: service_msgs/ServiceEventInfo\nuint8 REQUEST_SENT = 0\nuint8 REQUEST_RECEIVED = 1\n"
        f"uint8 RESPONSE_SENT = 2\nuint8 RESPONSE_RECEIVED = 3\nuint8 event_type\nbuiltin_interfaces/Time stamp\n"
        f"char[16] client_gid\nint64 sequence_number\n{sep}\nMSG: builtin_interfaces/Time\nint32 sec\nuint32 nanosec\n"
        f"{sep}\nMSG: std_srvs/{kind}_Request\n{req}\n{sep}\nMSG: std_srvs/{kind}_Response\nbool success\nstring message\n"
    )


def check_frames(store: EpisodeStore, ep: int, truth: dict, cams=("front", "wrist")):
    """Every frame is a recorded joint state, with the camera image captured just before it and
    the first command after it: the recorder's alignment."""
    d = store.get_episode(ep)
    stamps = sorted(truth)
    for i in range(len(d["action"])):
        match = [s for s in stamps if np.allclose(truth[s]["pos"][:7].astype(np.float32), d["joint_pos"][i])]
        assert len(match) == 1
        tr = truth[match[0]]
        np.testing.assert_array_equal(d["gripper"][i], tr["pos"][7:].astype(np.float32))
        np.testing.assert_array_equal(d["joint_vel"][i], tr["vel"][:7].astype(np.float32))
        assert d["action"][i][0] == tr["k"]  # the command issued after this frame
        if d["valid"][i].all():
            for c, cam in enumerate(cams):
                np.testing.assert_array_equal(d[f"{cam}_rgb"][i], img_at(tr["k"], c))


def test_services_split_mcap_with_gap_and_discard(tmp_path, hw):
    b = BagBuilder()
    b.service(99.9, "start", 1)
    b.stream(100.0, 30, drop_cam={10, 11, 12})
    b.service(101.5, "mark_success", 2, data=True)
    b.service(101.6, "stop", 3)
    b.service(103.0, "start", 4)
    b.stream(103.1, 10)
    b.service(103.7, "discard", 5)  # the operator threw this one away
    b.service(104.9, "start", 6)
    b.stream(105.0, 20)
    b.service(105.99, "stop", 7)  # (a stop long after the last joint state would count a missing tail frame)
    bag = b.write(tmp_path / "session")

    rep = B.import_bag(bag, tmp_path / "ds.zarr", hw)
    assert rep.split == "services" and not rep.refused
    assert [e["frames"] for e in rep.committed] == [30, 20]
    assert rep.topics["/wrist/color/image_raw"] == "/wrist/color/image_raw"
    store = EpisodeStore.open(tmp_path / "ds.zarr")
    assert store.num_episodes == 2 and store.fps == HZ and store.robot == "bagbot"
    meta = store.episodes_meta()
    assert meta[0]["success"] is True and "success" not in meta[1] and meta[0]["task"] == "pick"
    # the dropped camera frames: flagged in the mask and listed, exactly as a live recording
    valid = store.get_episode(0)["valid"]
    assert store.schema["valid"].names == [
        "/joint_states",
        "/front/color/image_raw",
        "/wrist/color/image_raw",
        "/joint_commands",
    ]
    assert not valid[:, 1].all() and valid[:, [0, 2, 3]].all()
    assert [g["stream"] for g in meta[0]["gaps"]] == ["/front/color/image_raw"]
    assert meta[0]["frames_missing"]["/front/color/image_raw"] == 3
    assert store.get_episode(1)["valid"].all() and meta[1]["gaps"] == []
    check_frames(store, 0, b.truth)
    check_frames(store, 1, b.truth)


def test_marker_and_gap_split_sqlite3_and_strict_refusal(tmp_path, hw):
    b = BagBuilder(1)
    b.marker(49.9, "start")
    b.stream(50.0, 12)
    b.marker(50.6, "failure")
    b.marker(50.62, "stop")
    b.marker(52.0, "start")
    b.stream(52.1, 25, drop_cam=set(range(5, 15)))  # ten camera frames lost
    b.marker(53.4, "stop")
    bag = b.write(tmp_path / "db", StoragePlugin.SQLITE3)
    assert list((tmp_path / "db").glob("*.db3"))

    rep = B.import_bag(bag, tmp_path / "m.zarr", hw, split="auto", strict=True, max_missing=5)
    assert rep.split == "marker" and len(rep.committed) == 1 and len(rep.refused) == 1
    assert "'/front/color/image_raw' is missing 10 frames" in rep.refused[0]["error"]
    store = EpisodeStore.open(tmp_path / "m.zarr")
    assert store.episode_meta(0)["success"] is False and store.num_frames == 12
    check_frames(store, 0, b.truth)

    rep = B.import_bag(bag, tmp_path / "g.zarr", hw, split="gap", gap_s=0.5)
    assert rep.split == "gap" and [e["frames"] for e in rep.committed] == [12, 25]
    assert (
        EpisodeStore.open(tmp_path / "g.zarr").episode_meta(1)["frames_missing"]["/front/color/image_raw"]
        == 10
    )


def test_store_to_bag_and_back(tmp_path, hw):
    rng = np.random.default_rng(2)
    schema = {
        "joint_pos": KeySpec("float32", (7,)),
        "joint_vel": KeySpec("float32", (7,)),
        "gripper": KeySpec("float32", (1,)),
        "action": KeySpec("float32", (8,)),
        "front_rgb": KeySpec("uint8", (12, 16, 3)),
        "wrist_rgb": KeySpec("uint8", (12, 16, 3)),
    }
    src = EpisodeStore.create(tmp_path / "src.zarr", schema, fps=HZ, robot="bagbot")
    for e, n in enumerate((15, 22)):
        src.add_episode(
            {
                "joint_pos": rng.normal(size=(n, 7)).astype(np.float32),
                "joint_vel": rng.normal(size=(n, 7)).astype(np.float32),
                "gripper": rng.normal(size=(n, 1)).astype(np.float32),
                "action": rng.normal(size=(n, 8)).astype(np.float32),
                "front_rgb": rng.integers(0, 255, (n, 12, 16, 3), dtype=np.uint8),
                "wrist_rgb": rng.integers(0, 255, (n, 12, 16, 3), dtype=np.uint8),
            },
            meta={"success": e == 1},
        )
    src.close()
    for storage in ("mcap", "sqlite3"):
        rep = B.export_bag(tmp_path / "src.zarr", tmp_path / f"bag_{storage}", hw, storage=storage)
        assert rep.episodes == 2 and rep.frames == 37
        back_path = tmp_path / f"back_{storage}.zarr"
        imp = B.import_bag(tmp_path / f"bag_{storage}", back_path, hw)
        assert imp.split == "marker" and not imp.refused
        back = EpisodeStore.open(back_path)
        srcs = EpisodeStore.open(tmp_path / "src.zarr")
        assert list(back.episode_ends) == list(srcs.episode_ends)
        for k in schema:
            np.testing.assert_array_equal(back.array(k)[:], srcs.array(k)[:], err_msg=k)
        assert [m["success"] for m in back.episodes_meta()] == [False, True]
        assert back.array("valid")[:].all()


def test_single_mcap_file_cli_and_errors(tmp_path, hw, capsys):
    from robot_policy.cli.main import main

    b = BagBuilder(3)
    b.stream(10.0, 8, compressed_wrist=True)  # image_transport's compressed images (png: lossless)
    b.stream(20.0, 9, compressed_wrist=True)
    b.write(tmp_path / "two")
    (mcap,) = (tmp_path / "two").glob("*.mcap")
    assert main(["dataset", "import-bag", str(mcap), str(tmp_path / "c.zarr"), "--hardware", hw]) == 0
    out = capsys.readouterr().out
    assert "2 episode(s) committed" in out and "split by gap" in out
    assert "/wrist/color/image_raw/compressed" in out
    store = EpisodeStore.open(tmp_path / "c.zarr")
    check_frames(store, 0, b.truth)
    check_frames(store, 1, b.truth)
    assert (
        main(["dataset", "import-bag", str(mcap), str(tmp_path / "d.zarr"), "--hardware", "sim_tabletop"])
        == 1
    )
    assert "camera 'agentview'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--split services.*include-services"):
        B.import_bag(mcap, tmp_path / "e.zarr", hw, split="services")
    assert (
        main(["dataset", "export-bag", str(tmp_path / "c.zarr"), str(tmp_path / "x"), "--hardware", hw]) == 0
    )
    assert "ros2 bag play" in capsys.readouterr().out
