"""UVC / V4L2 backend (OpenCV ``VideoCapture``; ``pip install 'robot_policy[cameras]'``)."""

from robot_policy.cameras.uvc.camera import UVCCamera, UVCConfig

__all__ = ["UVCCamera", "UVCConfig"]
