"""RealSense backend (pyrealsense2, ``pip install 'robot_policy[realsense]'``)."""

from robot_policy.cameras.realsense.camera import RealSenseCamera, RealSenseConfig, connected_serials

__all__ = ["RealSenseCamera", "RealSenseConfig", "connected_serials"]
