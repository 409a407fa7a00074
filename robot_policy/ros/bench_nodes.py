"""Small processes for ``robot-policy bench ros`` (run as ``python -m robot_policy.ros.bench_nodes``).

* ``image_pub``: publishes N synthetic rgb8 frames at a rate, stamped at capture, data from bytes;
* ``image_sub``: receives them and prints JSON: count, latency (arrival - stamp) percentiles;
* ``echo``: answers every ``/joint_states`` with a JointTrajectory stamped with that state's
  capture time, without any inference: the graph's observation-to-command floor.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def _qos(name: str):
    from rclpy.qos import QoSProfile, qos_profile_sensor_data

    return qos_profile_sensor_data if name == "sensor" else QoSProfile(depth=10)


def image_pub(a) -> None:
    import rclpy
    from sensor_msgs.msg import Image

    from robot_policy.ros import convert
    from robot_policy.types import Frame

    rclpy.init()
    node = rclpy.create_node("bench_image_pub")
    pub = node.create_publisher(Image, "/bench/image_raw", _qos(a.qos))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (a.height, a.width, 3), dtype=np.uint8) for _ in range(4)]
    deadline = time.time() + 30
    while pub.get_subscription_count() < 1 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # let discovery settle on both sides
    period = 1.0 / a.rate
    t_next = time.monotonic()
    for i in range(a.count):
        msg = convert.frame_to_image(Frame(frames[i % 4], time.time(), "bench"))
        msg.header.stamp = node.get_clock().now().to_msg()  # capture stamp right before publish
        pub.publish(msg)
        t_next += period
        time.sleep(max(0.0, t_next - time.monotonic()))
    time.sleep(1.0)
    node.destroy_node()
    rclpy.try_shutdown()


def image_sub(a) -> None:
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("bench_image_sub")
    lat: list[float] = []
    first = [None]

    def cb(msg):
        now = node.get_clock().now().nanoseconds * 1e-9
        lat.append(now - (msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec))
        first[0] = first[0] or time.monotonic()

    node.create_subscription(Image, "/bench/image_raw", cb, _qos(a.qos))
    start = time.monotonic()
    span = a.count / a.rate
    while rclpy.ok():
        rclpy.spin_once(node, timeout_sec=0.05)
        if len(lat) >= a.count:
            break
        if first[0] is not None and time.monotonic() - first[0] > span + 3.0:
            break
        if first[0] is None and time.monotonic() - start > a.timeout:
            break
    arr = np.asarray(lat) * 1e3
    res = {"received": len(lat), "sent": a.count}
    if len(arr):
        res.update({f"p{q}_ms": float(np.percentile(arr, q)) for q in (50, 90, 99)})
        res["mean_ms"] = float(arr.mean())
    print("RESULT " + json.dumps(res), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


def echo(a) -> None:
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from robot_policy import conventions as conv
    from robot_policy.ros import convert
    from robot_policy.ros._node import COMMAND_QOS, SENSOR_QOS, run_node

    def factory():
        import rclpy.node

        node = rclpy.node.Node("echo")
        pub = node.create_publisher(JointTrajectory, conv.TRAJECTORY, COMMAND_QOS)

        def cb(msg: JointState):
            traj = JointTrajectory(joint_names=list(msg.name))
            traj.header.stamp = msg.header.stamp  # origin: the capture time it answers
            traj.points = [
                JointTrajectoryPoint(positions=list(msg.position), time_from_start=convert.to_duration(0.05))
            ]
            pub.publish(traj)

        node.create_subscription(JointState, conv.JOINT_STATES, cb, SENSOR_QOS)
        return node

    sys.exit(run_node(factory))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m robot_policy.ros.bench_nodes")
    sub = p.add_subparsers(dest="role", required=True)
    for role in ("image_pub", "image_sub"):
        q = sub.add_parser(role)
        q.add_argument("--rate", type=float, default=30.0)
        q.add_argument("--count", type=int, default=150)
        q.add_argument("--width", type=int, default=640)
        q.add_argument("--height", type=int, default=480)
        q.add_argument("--qos", choices=["reliable", "sensor"], default="reliable")
        q.add_argument("--timeout", type=float, default=40.0)
    sub.add_parser("echo")
    a, _ = p.parse_known_args(argv)  # echo receives --ros-args from the launcher
    {"image_pub": image_pub, "image_sub": image_sub, "echo": echo}[a.role](a)


if __name__ == "__main__":
    main()
