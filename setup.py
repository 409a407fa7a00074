# Shim for colcon's ament_python build type, which calls setup.py; all metadata is in pyproject.toml.
from setuptools import setup

setup()
